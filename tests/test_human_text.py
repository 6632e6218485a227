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
