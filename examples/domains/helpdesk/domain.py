"""The helpdesk domain: its database, tools, environment and tasks, built on tau2's base classes.

Data live beside the code (``data/``): ``db.json`` (employees and tickets), ``policy.md`` (what the
agent must follow) and ``tasks.json`` (tau2 tasks: a customer scenario and the gold actions the
evaluator replays to compute the expected database).
"""

# No `from __future__ import annotations` here: tau2 builds tool schemas from the real annotations.
import json
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, Field
from tau2.data_model.tasks import Task
from tau2.environment.db import DB
from tau2.environment.environment import Environment
from tau2.environment.toolkit import ToolKitBase, ToolType, is_tool

DATA = Path(__file__).parent / "data"


class Employee(BaseModel):
    employee_id: str = Field(description="Unique identifier of the employee")
    name: str = Field(description="Full name")
    email: str = Field(description="Work e-mail address")
    locked_out: bool = Field(description="Whether the account is locked after failed logins")
    password_resets: int = Field(description="How many password resets were issued")


class Ticket(BaseModel):
    ticket_id: str = Field(description="Unique identifier of the ticket")
    employee_id: str = Field(description="Who the ticket is for")
    summary: str = Field(description="One line describing the problem")
    priority: Literal["low", "normal", "high"] = Field(description="How urgent it is")


class HelpdeskDB(DB):
    """Employees and their support tickets."""

    employees: dict[str, Employee] = Field(description="Employees by id")
    tickets: dict[str, Ticket] = Field(description="Tickets by id")


class HelpdeskTools(ToolKitBase):
    """What the helpdesk agent can do."""

    db: HelpdeskDB

    def __init__(self, db: HelpdeskDB) -> None:
        super().__init__(db)

    @is_tool(ToolType.READ)
    def get_employee(self, employee_id: str) -> Employee:
        """
        Look up an employee.

        Args:
            employee_id: The employee's id, e.g. "e1"

        Returns:
            The employee's record

        Raises:
            ValueError: If there is no such employee
        """
        if employee_id not in self.db.employees:
            raise ValueError(f"Employee {employee_id} not found")
        return self.db.employees[employee_id]

    @is_tool(ToolType.WRITE)
    def reset_password(self, employee_id: str) -> Employee:
        """
        Unlock the employee's account and send them a one-time password.

        Args:
            employee_id: The employee's id

        Returns:
            The updated employee record

        Raises:
            ValueError: If there is no such employee
        """
        employee = self.get_employee(employee_id)
        employee.locked_out = False
        employee.password_resets += 1
        return employee

    @is_tool(ToolType.WRITE)
    def create_ticket(self, employee_id: str, summary: str, priority: Literal["low", "normal", "high"] = "normal") -> Ticket:
        """
        Open a support ticket for an employee.

        Args:
            employee_id: The employee's id
            summary: One line describing the problem
            priority: low, normal or high

        Returns:
            The new ticket

        Raises:
            ValueError: If there is no such employee
        """
        self.get_employee(employee_id)
        ticket = Ticket(ticket_id=f"t{len(self.db.tickets) + 1}", employee_id=employee_id, summary=summary, priority=priority)
        self.db.tickets[ticket.ticket_id] = ticket
        return ticket


def get_environment(db: Optional[HelpdeskDB] = None, solo_mode: bool = False) -> Environment:
    """tau2's environment for the domain (``db``: a database to start from; moodbench passes pooled copies)."""
    if db is None:
        db = HelpdeskDB.load(str(DATA / "db.json"))
    env = Environment(domain_name="helpdesk", policy=(DATA / "policy.md").read_text(encoding="utf-8"),
                      tools=HelpdeskTools(db))
    if solo_mode:
        env.set_solo_mode(True)
    return env


def get_tasks(task_split_name: Optional[str] = None) -> list[Task]:
    tasks = [Task.model_validate(t) for t in json.loads((DATA / "tasks.json").read_text(encoding="utf-8"))]
    if task_split_name is None:
        return tasks
    splits = get_tasks_split()
    if task_split_name not in splits:
        raise ValueError(f"unknown task split {task_split_name!r}; valid: {', '.join(splits)}")
    return [t for t in tasks if t.id in splits[task_split_name]]


def get_tasks_split() -> dict[str, list[str]]:
    return {"base": [t["id"] for t in json.loads((DATA / "tasks.json").read_text(encoding="utf-8"))]}
