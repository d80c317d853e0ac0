"""One hand-written example of each item type in the Agents SDK's `TResponseInputItem`
union, each with a field unknown to us (`x_extra`), which must come back too."""

from __future__ import annotations

import typing
from typing import Any

from openai.types.responses import response_input_item_param

EXTRA = {"x_extra": {"nested": [1, 2.5, None, True, "é😀"]}}

EXAMPLES: dict[str, dict[str, Any]] = {
    "easy_user": {"role": "user", "content": "Add milk\r\nplease", **EXTRA},
    "easy_system": {"role": "system", "content": "Be brief."},
    "easy_developer": {"role": "developer", "content": [{"type": "input_text", "text": "Hi"}]},
    "easy_assistant": {"role": "assistant", "content": "Sure."},
    "input_message": {
        "type": "message",
        "role": "user",
        "content": [
            {"type": "input_text", "text": "Look: "},
            {"type": "input_image", "image_url": "https://example.com/a.png", "detail": "auto"},
            {"type": "input_file", "file_id": "file-1"},
        ],
        **EXTRA,
    },
    "output_message": {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [
            {"type": "output_text", "text": "Done.", "annotations": [], "logprobs": []},
            {"type": "refusal", "refusal": "Not that."},
        ],
        **EXTRA,
    },
    "file_search_call": {
        "id": "fs_1",
        "type": "file_search_call",
        "queries": ["milk"],
        "status": "completed",
        "results": [{"file_id": "f", "filename": "a.txt", "score": 0.5, "text": "milk"}],
        **EXTRA,
    },
    "computer_call": {
        "id": "cu_1",
        "type": "computer_call",
        "call_id": "call_cu",
        "action": {"type": "click", "button": "left", "x": 1, "y": 2},
        "pending_safety_checks": [],
        "status": "completed",
        **EXTRA,
    },
    "computer_call_output": {
        "type": "computer_call_output",
        "call_id": "call_cu",
        "output": {"type": "computer_screenshot", "image_url": "data:image/png;base64,AA=="},
        **EXTRA,
    },
    "web_search_call": {
        "id": "ws_1",
        "type": "web_search_call",
        "status": "completed",
        "action": {"type": "search", "query": "milk"},
        **EXTRA,
    },
    "function_call": {
        "id": "fc_1",
        "type": "function_call",
        "call_id": "call_1",
        "name": "add_task",
        "arguments": '{"title": "milk"}',
        "status": "completed",
        **EXTRA,
    },
    "function_call_output": {
        "type": "function_call_output",
        "call_id": "call_1",
        "output": '{"id": 1}',
        **EXTRA,
    },
    "function_call_output_parts": {
        "type": "function_call_output",
        "call_id": "call_1",
        "output": [{"type": "input_text", "text": "ok"}, {"type": "input_image", "file_id": "f"}],
    },
    "tool_search_call": {
        "type": "tool_search_call",
        "id": "ts_1",
        "arguments": {"query": "tasks"},
        **EXTRA,
    },
    "tool_search_output": {"type": "tool_search_output", "id": "tso_1", "tools": [], **EXTRA},
    "reasoning": {
        "id": "rs_1",
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": "Thinking"}],
        "encrypted_content": "gAAAA",
        **EXTRA,
    },
    "compaction": {"type": "compaction", "id": "cmp_1", "encrypted_content": "gAAAA", **EXTRA},
    "image_generation_call": {
        "id": "ig_1",
        "type": "image_generation_call",
        "status": "completed",
        "result": "iVBORw0KGgo=",
        **EXTRA,
    },
    "code_interpreter_call": {
        "id": "ci_1",
        "type": "code_interpreter_call",
        "code": "print(1)",
        "container_id": "cntr_1",
        "outputs": [{"type": "logs", "logs": "1"}],
        "status": "completed",
        **EXTRA,
    },
    "local_shell_call": {
        "id": "ls_1",
        "type": "local_shell_call",
        "call_id": "call_ls",
        "action": {"type": "exec", "command": ["ls"], "env": {}},
        "status": "completed",
        **EXTRA,
    },
    "local_shell_call_output": {
        "id": "lso_1",
        "type": "local_shell_call_output",
        "output": '{"stdout": ""}',
        **EXTRA,
    },
    "shell_call": {
        "type": "shell_call",
        "call_id": "call_sh",
        "action": {"commands": ["ls"]},
        **EXTRA,
    },
    "shell_call_output": {
        "type": "shell_call_output",
        "call_id": "call_sh",
        "output": [{"stdout": "", "stderr": "", "outcome": {"type": "exit", "exit_code": 0}}],
        **EXTRA,
    },
    "apply_patch_call": {
        "type": "apply_patch_call",
        "call_id": "call_ap",
        "status": "completed",
        "operation": {"type": "create_file", "path": "a.txt", "diff": "+a"},
        **EXTRA,
    },
    "apply_patch_call_output": {
        "type": "apply_patch_call_output",
        "call_id": "call_ap",
        "status": "completed",
        **EXTRA,
    },
    "mcp_list_tools": {
        "id": "ml_1",
        "type": "mcp_list_tools",
        "server_label": "tasks",
        "tools": [{"name": "add", "input_schema": {"type": "object"}}],
        **EXTRA,
    },
    "mcp_approval_request": {
        "id": "mar_1",
        "type": "mcp_approval_request",
        "server_label": "tasks",
        "name": "add",
        "arguments": "{}",
        **EXTRA,
    },
    "mcp_approval_response": {
        "type": "mcp_approval_response",
        "approval_request_id": "mar_1",
        "approve": True,
        **EXTRA,
    },
    "mcp_call": {
        "id": "mc_1",
        "type": "mcp_call",
        "server_label": "tasks",
        "name": "add",
        "arguments": "{}",
        "output": "ok",
        **EXTRA,
    },
    "custom_tool_call": {
        "type": "custom_tool_call",
        "call_id": "call_ct",
        "name": "grammar",
        "input": "raw text",
        **EXTRA,
    },
    "custom_tool_call_output": {
        "type": "custom_tool_call_output",
        "call_id": "call_ct",
        "output": "done",
        **EXTRA,
    },
    "item_reference": {"type": "item_reference", "id": "msg_0", **EXTRA},
    "item_reference_untyped": {"id": "msg_0"},
    "additional_tools": {"type": "additional_tools", "tools": [{"type": "web_search"}], **EXTRA},
    "compaction_trigger": {"type": "compaction_trigger", **EXTRA},
    "configuration_update": {"type": "configuration_update", "id": "cu_9", **EXTRA},
    "program": {"type": "program", "id": "p_1", "code": "x = 1", **EXTRA},
    "program_output": {"type": "program_output", "id": "po_1", "output": "1", **EXTRA},
    "unknown_future_type": {"type": "hologram_call", "id": "h_1", "beam": [1, 2], **EXTRA},
}


def sdk_item_types() -> set[str]:
    """The `type` of each member of the installed SDK's input item union."""
    types = set()
    for member in typing.get_args(response_input_item_param.ResponseInputItemParam):
        hint = typing.get_type_hints(member).get("type")
        types.update(arg for arg in typing.get_args(hint) if isinstance(arg, str))
        for inner in typing.get_args(hint):
            types.update(arg for arg in typing.get_args(inner) if isinstance(arg, str))
    return types
