"""Reading conversations: simulator-fidelity rules and judge, emotion scores and judge, NL-assertion judge.

Everything here works on plain message JSON (role, content, tool_calls), so it runs on live
conversations and on stored records alike, and knows nothing about tau2's classes.
"""

from moodbench.judges._emotion import (
    DEFAULT_FAMILIES,
    JUDGE_FAMILIES,
    LEXICONS,
    families_of,
    judge_conversations,
    marker_hits,
    parse_judge,
    text_scores,
    word_count,
)
from moodbench.judges._fidelity import (
    ECHO_SIMILARITY,
    Scenario,
    content_words,
    ends_conversation,
    fidelity_flags,
    is_echo,
    is_write,
    looks_like_agent,
    words,
)
from moodbench.judges._fidelity_judge import LEVEL_TO_INTENSITY, judge_fidelity
from moodbench.judges._nl_assertions import AssertionVerdict, judge_nl_assertions
from moodbench.judges._transcript import AGENT_CUSTOMER, render_transcript

__all__ = [
    "AGENT_CUSTOMER",
    "DEFAULT_FAMILIES",
    "ECHO_SIMILARITY",
    "JUDGE_FAMILIES",
    "LEVEL_TO_INTENSITY",
    "LEXICONS",
    "AssertionVerdict",
    "Scenario",
    "ends_conversation",
    "content_words",
    "families_of",
    "fidelity_flags",
    "is_echo",
    "is_write",
    "judge_conversations",
    "judge_fidelity",
    "judge_nl_assertions",
    "looks_like_agent",
    "marker_hits",
    "parse_judge",
    "render_transcript",
    "text_scores",
    "word_count",
    "words",
]
