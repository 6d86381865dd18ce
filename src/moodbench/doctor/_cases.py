"""The fixed battery of tool decisions that ``moodbench probe`` and the run's preflight send.

Each case is one agent turn of a tau2 conversation: tau2's own greeting, optionally a short earlier
exchange, then a customer message. About half the cases can only be served by calling one of the
domain's real tools (ids, names and products exist in tau2's databases, so a call would succeed);
the other half need a plain answer (a greeting, a goodbye, a question the policy answers). Earlier
exchanges are plain text (no tool messages) so that servers which reject replayed tool calls in the
prompt still answer every case.

The cases are data, not prompts tuned to any model: they are fixed so that two models, two servers
or two parser flags can be compared on the same decisions.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProbeCase:
    """One decision. ``expected`` lists the tools a policy-following agent may call first (empty: answer)."""

    id: str
    domain: str
    message: str
    expected: tuple[str, ...] = ()
    history: tuple[tuple[str, str], ...] = ()  # (role, text) pairs after tau2's greeting
    preflight: bool = False  # part of the short subset that ``moodbench run`` sends before the first conversation

    @property
    def needs_tool(self) -> bool:
        return bool(self.expected)


_THANKS = "Thanks, that's all I needed. Have a nice day!"
_RETAIL_AUTH: tuple[tuple[str, str], ...] = (
    ("user", "Hi, I'm Yusuf Rossi, zip code 19122."),
    ("assistant", "Thank you, Yusuf. I have verified your identity: your user id is yusuf_rossi_9620. What can I do for you?"),
)
_AIRLINE_ID: tuple[tuple[str, str], ...] = (
    ("user", "Hello, my user id is mia_li_3668."),
    ("assistant", "Thank you, Mia. How can I help you with your reservations today?"),
)

CASES: tuple[ProbeCase, ...] = (
    # -- mock ---------------------------------------------------------------------------------
    ProbeCase("mock-create-task", "mock", "Please create a task called 'Buy milk' for user_1.", ("create_task",), preflight=True),
    ProbeCase("mock-complete-task", "mock", "Please mark task task_1 as completed.", ("update_task_status",), preflight=True),
    ProbeCase("mock-list-users", "mock", "Which users exist in the system? Please look them up for me.", ("get_users",)),
    ProbeCase("mock-delete-task", "mock", "I want task_1 deleted right now.", ("transfer_to_human_agents",)),
    ProbeCase("mock-greeting", "mock", "Hi there!", preflight=True),
    ProbeCase(
        "mock-thanks",
        "mock",
        _THANKS,
        history=(
            ("user", "Can you create a task called 'Call mom' for user_1?"),
            ("assistant", "Done: the task 'Call mom' has been created for user_1 with status pending."),
        ),
    ),
    ProbeCase("mock-policy-status", "mock", "Which statuses can a task have?"),
    ProbeCase("mock-compliment", "mock", "I had a rough day. Could you give me a compliment?"),
    # -- retail -------------------------------------------------------------------------------
    ProbeCase(
        "retail-find-by-name-zip",
        "retail",
        "Hi, I need help with an order. Please find my account: I'm Yusuf Rossi, zip code 19122.",
        ("find_user_id_by_name_zip",),
        preflight=True,
    ),
    ProbeCase(
        "retail-find-by-email",
        "retail",
        "My email is yusuf.rossi7301@example.com. Can you look up my account?",
        ("find_user_id_by_email",),
    ),
    ProbeCase(
        "retail-order-details",
        "retail",
        "What's in my order #W6247578, and has it shipped yet?",
        ("get_order_details",),
        history=_RETAIL_AUTH,
        preflight=True,
    ),
    ProbeCase(
        "retail-product-details",
        "retail",
        "Which sizes and colors of the T-Shirt (product id 9523456873) are available right now?",
        ("get_product_details",),
        history=_RETAIL_AUTH,
    ),
    ProbeCase(
        "retail-payment-methods",
        "retail",
        "Which payment methods do I have on file with you?",
        ("get_user_details",),
        history=_RETAIL_AUTH,
    ),
    ProbeCase("retail-greeting", "retail", "Hello!", preflight=True),
    ProbeCase(
        "retail-thanks",
        "retail",
        _THANKS,
        history=_RETAIL_AUTH
        + (
            ("user", "Is my default address still 763 Broadway in Philadelphia?"),
            ("assistant", "Yes, your default address is 763 Broadway, Suite 135, Philadelphia, PA 19122."),
        ),
    ),
    ProbeCase("retail-policy-payment-types", "retail", "Before I start: which kinds of payment methods does your store accept?"),
    # -- airline ------------------------------------------------------------------------------
    ProbeCase(
        "airline-reservation-details",
        "airline",
        "Can you show me the details of my reservation NO6JO3?",
        ("get_reservation_details", "get_user_details"),
        history=_AIRLINE_ID,
        preflight=True,
    ),
    ProbeCase(
        "airline-list-reservations",
        "airline",
        "Which reservations do I have on my profile?",
        ("get_user_details",),
        history=_AIRLINE_ID,
    ),
    ProbeCase(
        "airline-search-direct",
        "airline",
        "Are there any direct flights from JFK to SEA on 2024-05-20?",
        ("search_direct_flight",),
        preflight=True,
    ),
    ProbeCase(
        "airline-flight-status", "airline", "What is the current status of flight HAT083 on 2024-05-16?", ("get_flight_status",)
    ),
    ProbeCase("airline-greeting", "airline", "Hi!", preflight=True),
    ProbeCase(
        "airline-thanks",
        "airline",
        _THANKS,
        history=_AIRLINE_ID
        + (
            ("user", "How many passengers can one reservation have at most?"),
            ("assistant", "A reservation can have at most five passengers."),
        ),
    ),
    ProbeCase("airline-policy-cabins", "airline", "What cabin classes do you offer?"),
    ProbeCase("airline-policy-bags", "airline", "As a regular member, how many free checked bags do I get in economy class?"),
    # -- telecom (optional domain) ------------------------------------------------------------
    ProbeCase(
        "telecom-find-by-phone",
        "telecom",
        "Hi, my phone number is 555-123-2002. Can you pull up my account?",
        ("get_customer_by_phone",),
        preflight=True,
    ),
    ProbeCase(
        "telecom-find-by-name", "telecom", "I'm John Smith, born 1985-06-15. Please find my account.", ("get_customer_by_name",)
    ),
    ProbeCase(
        "telecom-bills",
        "telecom",
        "My customer id is C1001. Which bills do I have?",
        ("get_bills_for_customer", "get_customer_by_id"),
        preflight=True,
    ),
    ProbeCase("telecom-greeting", "telecom", "Hello there!", preflight=True),
    ProbeCase(
        "telecom-thanks",
        "telecom",
        _THANKS,
        history=(("user", "Do you help with overdue bills?"), ("assistant", "Yes, I can help you pay an overdue bill.")),
    ),
    ProbeCase("telecom-policy-status", "telecom", "Which account status types are there?"),
)


def cases_for(domain: str, *, preflight_only: bool = False) -> list[ProbeCase]:
    """The battery for ``domain`` (in a fixed order); ``preflight_only`` gives the short subset."""
    return [c for c in CASES if c.domain == domain and (c.preflight or not preflight_only)]


def probe_domains() -> list[str]:
    return sorted({c.domain for c in CASES})
