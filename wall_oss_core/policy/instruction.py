"""Rules for the language instruction that selects the robot's task.

The instruction goes straight into the model's prompt, so anything a person could not have meant
(control characters, megabytes of text) is rejected with a reason instead of silently changing the
task. An empty instruction (after stripping surrounding whitespace) is valid and means "pause".
"""
from __future__ import annotations

DEFAULT_MAX_INSTRUCTION_LENGTH = 512  # characters; far longer than any task description


class InstructionError(ValueError):
    """An instruction that must not become the task. `reason` is a short stable key for counting."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def validate_instruction(text: str, max_length: int = DEFAULT_MAX_INSTRUCTION_LENGTH) -> str:
    """Return the instruction with surrounding whitespace stripped ("" = pause), or raise InstructionError."""
    if not isinstance(text, str):
        raise InstructionError("not_text", f"instruction must be text, got {type(text).__name__}")
    stripped = text.strip()
    if len(stripped) > max_length:
        raise InstructionError("too_long", f"instruction has {len(stripped)} characters; at most {max_length} "
                                           "are accepted")
    if not stripped.isprintable():
        bad = sorted({f"U+{ord(ch):04X}" for ch in stripped if not ch.isprintable()})
        raise InstructionError("non_printable", f"instruction contains non-printable characters {', '.join(bad)}")
    return stripped




class InstructionDeliveries:
    """Which of a node's two instruction subscriptions a message counts from.

    Nodes subscribe to the instruction twice: transient-local, so that a latched publisher's last
    instruction reaches a node that starts later, and volatile, because `ros2 topic pub` publishes volatile
    and a transient-local subscription never matches it. A latched publisher's live messages reach both,
    in an order between the two that nothing guarantees. So the transient-local subscription counts only
    until the first instruction has arrived (that is the history a late joiner needs); from then on every
    instruction comes through the volatile one, which matches both kinds of publisher and keeps each
    publisher's order."""

    def __init__(self):
        self._received = False

    def accept(self, latched_subscription: bool) -> bool:
        if latched_subscription and self._received:
            return False
        self._received = True
        return True
