"""What the simulator answers to a valid request, and the JSON payloads that carry it.

An :class:`Answer` is decided once per request (the text, the thoughts, what is cited,
the workflow mode); :func:`stream_payloads` cuts it into the objects of the ``result``
events and :func:`json_payload` makes the one body of a non-streaming answer. Field
order follows the captures of the real service, which differs between the two.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .._wire import dumps
from .conversations import Conversation
from .knowledge import (
    Retrieval,
    cite,
    memory_thought,
    reasoning_text,
    reasoning_thought,
)
from .replies import is_chinese

_WORKFLOW_MODES = ("message_format", "message_format_plus")


@dataclass(slots=True, eq=False)
class Answer:
    request_id: str
    session_id: str
    prompt: str
    text: str
    incremental: bool
    model_id: str
    input_tokens: int
    thoughts: list[dict[str, Any]] | None
    retrieval: Retrieval | None
    workflow: str | None  # "message_format" or "message_format_plus": node events
    workflow_app: bool  # a workflow's JSON answer has empty usage
    reasoning: str | None
    conversation: Conversation | None  # where the turn is written once sent; None: nowhere
    memory_id: str | None


def compose(
    *,
    request_id: str,
    session_id: str,
    prompt: str,
    history: list[tuple[str, str]],
    text: str,
    parameters: dict[str, Any],
    model_id: str,
    reasoning_model: bool,
    workflow_app: bool,
    conversation: Conversation | None,
    memory_id: str | None,
    memories: list[str],
) -> Answer:
    """Decide the answer from the reply text and the request's ``parameters``."""
    zh = is_chinese(prompt)
    mode = parameters.get("flow_stream_mode")
    workflow = mode if mode in _WORKFLOW_MODES else None
    thinking = parameters.get("enable_thinking")
    reasons = thinking if isinstance(thinking, bool) else reasoning_model
    rag = parameters.get("rag_options")
    retrieval = None
    if isinstance(rag, dict) and workflow is None:
        text = cite(text)
        retrieval = Retrieval(text, rag, zh)
    reasoning = reasoning_text(prompt, history, zh) if reasons else None
    thoughts: list[dict[str, Any]] = []
    if parameters.get("has_thoughts") is True:
        if retrieval is not None:
            thoughts.append(retrieval.thought())
        if memory_id is not None:
            thoughts.append(memory_thought(memory_id, prompt, memories, zh))
        if reasoning is not None:
            thoughts.append(reasoning_thought(reasoning))
    return Answer(
        request_id=request_id,
        session_id=session_id,
        prompt=prompt,
        text=text,
        incremental=parameters.get("incremental_output") is True,
        model_id=model_id,
        input_tokens=len(prompt) + sum(len(u) + len(a) for u, a in history),
        thoughts=thoughts or None,
        retrieval=retrieval,
        workflow=workflow,
        workflow_app=workflow_app or mode is not None,
        reasoning=reasoning,
        conversation=conversation,
        memory_id=memory_id,
    )


def _models(answer: Answer, output_tokens: int) -> dict[str, Any]:
    model = {
        "input_tokens": answer.input_tokens,
        "output_tokens": output_tokens,
        "model_id": answer.model_id,
    }
    return {"models": [model]}


def _result(answer: Answer, finish: str, text: str, sent: int) -> dict[str, Any]:
    output: dict[str, Any] = {
        "session_id": answer.session_id,
        "finish_reason": finish,
        "text": text,
    }
    if answer.thoughts is not None:
        output["thoughts"] = answer.thoughts
    if answer.retrieval is not None:
        refs = answer.retrieval.references(sent, sse=True)
        if refs is not None:
            output["doc_references"] = refs
    return {"output": output, "usage": _models(answer, sent), "request_id": answer.request_id}


def stream_payloads(answer: Answer, chunk_size: int) -> list[dict[str, Any]]:
    """The JSON objects of every ``result`` event, the final ``stop`` one last."""
    text = answer.text
    pieces = [text[i : i + chunk_size] for i in range(0, len(text), chunk_size)]
    if answer.workflow is not None:
        return _workflow_payloads(answer, pieces)
    payloads = []
    sent = 0
    for piece in pieces:
        sent += len(piece)
        payloads.append(
            _result(answer, "null", piece if answer.incremental else text[:sent], sent)
        )
    payloads.append(_result(answer, "stop", "" if answer.incremental else text, len(text)))
    return payloads


def _workflow_payloads(answer: Answer, pieces: list[str]) -> list[dict[str, Any]]:
    plus = answer.workflow == "message_format_plus"
    nodes = [_node("Start_1", "开始", "Start", 1, True, "")] if plus else []
    for seq, piece in enumerate(pieces, 1):
        content = piece
        if plus:  # an LLM node's content is a JSON string in this mode
            thinking = answer.reasoning if seq == 1 and answer.reasoning else ""
            content = dumps({"result": piece, "reasoningContent": thinking})
        nodes.append(_node("LLM_1", "大模型1", "LLM", seq, seq == len(pieces), content))
    payloads = []
    for node in nodes:
        output: dict[str, Any] = {
            "session_id": answer.session_id,
            "finish_reason": "null",
            "workflow_message": node,
        }
        if answer.thoughts is not None:
            output["thoughts"] = answer.thoughts
        payloads.append({"output": output, "usage": {}, "request_id": answer.request_id})
    payloads.append(_result(answer, "stop", answer.text, len(answer.text)))
    return payloads


def _node(
    node_id: str, name: str, node_type: str, seq: int, completed: bool, content: str
) -> dict[str, Any]:
    return {
        "node_id": node_id,
        "node_name": name,
        "node_type": node_type,
        "node_status": "success" if completed else "executing",
        "node_is_completed": completed,
        "node_msg_seq_id": seq,
        "message": {"role": "assistant", "content": content},
    }


def json_payload(answer: Answer) -> dict[str, Any]:
    """The one body of a non-streaming answer."""
    output: dict[str, Any] = {}
    if answer.thoughts is not None:
        output["thoughts"] = answer.thoughts
    output["finish_reason"] = "stop"
    output["session_id"] = answer.session_id
    output["text"] = answer.text
    if answer.retrieval is not None:
        refs = answer.retrieval.references(len(answer.text), sse=False)
        if refs is not None:
            output["doc_references"] = refs
    usage: dict[str, Any] = {}
    if not answer.workflow_app:
        model = {
            "output_tokens": len(answer.text),
            "model_id": answer.model_id,
            "input_tokens": answer.input_tokens,
        }
        usage = {"models": [model]}
    return {"output": output, "usage": usage, "request_id": answer.request_id}


def padded_payload(answer: Answer, size: int) -> str:
    """A valid, non-final event's data of exactly ``size`` bytes (or the least it can be)."""
    output = {"session_id": answer.session_id, "finish_reason": "null", "text": ""}
    payload = {"output": output, "usage": _models(answer, 0), "request_id": answer.request_id}
    output["text"] = "x" * max(0, size - len(dumps(payload).encode()))
    return dumps(payload)
