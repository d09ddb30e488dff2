"""Instruction rules: strip, empty = pause, overlong and non-printable rejected with a reason."""
import pytest
from hypothesis import given
from hypothesis import strategies as st

from wall_oss_core.policy.instruction import (
    DEFAULT_MAX_INSTRUCTION_LENGTH,
    InstructionDeliveries,
    InstructionError,
    validate_instruction,
)


def test_surrounding_whitespace_is_stripped_inner_text_kept():
    assert validate_instruction("  pick up the red cube \n") == "pick up the red cube"


@pytest.mark.parametrize("text", ["", "   ", "\n\t "])
def test_empty_instruction_is_valid_and_means_pause(text):
    assert validate_instruction(text) == ""


def test_length_limit_is_inclusive_and_counts_stripped_text():
    at_limit = "a" * DEFAULT_MAX_INSTRUCTION_LENGTH
    assert validate_instruction(f"  {at_limit}  ") == at_limit
    with pytest.raises(InstructionError) as raised:
        validate_instruction(at_limit + "b")
    assert raised.value.reason == "too_long"
    assert validate_instruction("abcd", max_length=4) == "abcd"
    with pytest.raises(InstructionError, match="at most 3"):
        validate_instruction("abcd", max_length=3)


@pytest.mark.parametrize("text", ["pick\x00up", "stack\nthe cups", "bell\x07", "esc\x1b[31m", "zero\u200bwidth"])
def test_non_printable_characters_are_rejected(text):
    with pytest.raises(InstructionError) as raised:
        validate_instruction(text)
    assert raised.value.reason == "non_printable"
    assert "U+" in str(raised.value)


def test_non_text_is_rejected():
    with pytest.raises(InstructionError) as raised:
        validate_instruction(b"pick")
    assert raised.value.reason == "not_text"


@given(st.text(max_size=600))
def test_any_text_is_either_accepted_clean_or_rejected_with_a_known_reason(text):
    try:
        result = validate_instruction(text)
    except InstructionError as error:
        assert error.reason in {"too_long", "non_printable"}
    else:
        assert result == text.strip() and result.isprintable() and len(result) <= DEFAULT_MAX_INSTRUCTION_LENGTH


def test_the_latched_subscription_counts_only_until_the_first_instruction():
    late_joiner = InstructionDeliveries()
    assert late_joiner.accept(latched_subscription=True), "a latched publisher's last instruction"
    assert not late_joiner.accept(latched_subscription=True), "its live messages come through the volatile one"
    assert late_joiner.accept(latched_subscription=False)
    terminal_first = InstructionDeliveries()
    assert terminal_first.accept(latched_subscription=False)
    assert not terminal_first.accept(latched_subscription=True), "an older latched instruction arriving late"
    assert terminal_first.accept(latched_subscription=False)
