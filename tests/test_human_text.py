"""The person's words out of an agent's conversation (core/human_text.py)."""

from mcp_prism.core.human_text import person_text, strip_boilerplate

REMINDER = "<system-reminder>\nAs you answer the user's questions, you can use the following context:\n" + \
    "# claudeMd\n" + "Run tools in parallel so they run concurrently.\n" * 200 + "</system-reminder>\n"


def test_claude_code_reminders_are_not_the_prompt():
    ask = REMINDER + "write unit tests for the invoice parser"
    msgs = [{"role": "user", "content": [{"type": "text", "text": REMINDER}, {"type": "text", "text": ask}]}]
    assert person_text(msgs) == "write unit tests for the invoice parser"


def test_a_slash_command_keeps_its_name_and_arguments():
    text = ("<command-message>review is running…</command-message>\n<command-name>/review</command-name>\n"
            "<command-args>src/parser.py</command-args>")
    assert strip_boilerplate(text).split() == ["/review", "src/parser.py"]


def test_tool_results_and_system_messages_are_skipped_for_the_typed_turn():
    msgs = [{"role": "user", "content": "fix the flaky login test"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "Read", "input": {}}]},
            {"role": "system", "content": "You are Claude."},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "file body"},
                                         {"type": "text", "text": REMINDER}]}]
    assert person_text(msgs) == "fix the flaky login test"


def test_codex_environment_and_agents_md_are_stripped():
    items = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text":
              "# AGENTS.md instructions for /repo\n\n<INSTRUCTIONS>\nuse ruff\n</INSTRUCTIONS>"}]},
             {"type": "message", "role": "user", "content": [{"type": "input_text", "text":
              "<environment_context>\n  <cwd>/repo</cwd>\n</environment_context>"}]},
             {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "triage this ticket"}]},
             {"type": "function_call_output", "call_id": "c", "output": "ok"}]
    assert person_text(items) == "triage this ticket"


def test_the_newest_text_is_kept_over_the_limit():
    msgs = [{"role": "user", "content": [{"type": "text", "text": "x" * 5000}, {"type": "text", "text": "the ask"}]}]
    assert person_text(msgs, limit=100).endswith("the ask")
    assert len(person_text(msgs, limit=100)) == 100


# ---------------------------------------------------------------- real Claude Code 2.1.197 requests
def _captured(name):
    import json
    from pathlib import Path

    data = json.loads((Path(__file__).parent / "data" / "claude_code_2.1.197_request.json").read_text())
    return data["requests"][name]["body"]


def test_real_claude_code_prompt_is_the_persons_words():
    """The user turn opens with reminders (agents, skills, date) and a mid-conversation `role: "system"`
    message follows it: only the typed prompt is left."""
    body = _captured("prompt")
    assert body["messages"][-1]["role"] == "system"
    assert person_text(body["messages"]) == "write unit tests for the invoice parser"


def test_real_claude_code_slash_command_is_its_name_and_arguments():
    """`/review src/invoice.py` arrives as command tags followed by review.md's whole body: the body is the
    command's text, not the person's (its wording must not classify or upgrade the request)."""
    body = _captured("review")
    assert person_text(body["messages"]).split() == ["/review", "src/invoice.py"]
    expanded = body["messages"][0]["content"][-1]["text"]
    assert expanded.startswith("Review this change: src/invoice.py")
    tags = body["messages"][0]["content"][-2]["text"]
    assert strip_boilerplate(tags + expanded).split() == ["/review", "src/invoice.py"]  # one text block too


def test_harness_text_never_classifies_or_upgrades_a_request():
    from mcp_prism.config import shipped_classifier_model
    from mcp_prism.core.classify import Classifier, assess_complexity
    from mcp_prism.core.tasks import BUILTIN_TASK_TYPES

    classifier = Classifier(list(BUILTIN_TASK_TYPES), model=shipped_classifier_model())

    wrapped = REMINDER + "review src/invoice.py"
    assert assess_complexity(wrapped).boost == 0 and "concurrency" not in assess_complexity(wrapped).signals
    assert assess_complexity("review the lock handling so they run concurrently").boost == 1
    assert classifier.classify(wrapped).task_type == "code_review"
    body = _captured("review")
    text = person_text(body["messages"])
    assert classifier.classify(text).task_type == "code_review"
    assert assess_complexity(text).boost == 0
