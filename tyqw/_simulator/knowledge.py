"""What a RAG app retrieves and cites, and the thoughts an agent app reports.

Shapes follow the captures of the real service (protocol reference §4.3): a retrieval
(``agentRag``) thought whose ``observation`` is a JSON *string* of the retrieved chunks,
a long-term memory thought (``action_type: "api"``, ``action: "memory"``), and a
reasoning thought from reasoning models only. Citations are ``<ref>[n]</ref>`` markers
in the text; ``doc_references`` lists the chunks cited so far, by chunk number, and so
first appears with the first complete marker and grows as more are written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .._wire import dumps

_MARKER = re.compile(r"<ref>((?:\[\d+\])+)</ref>")
_NUMBER = re.compile(r"\d+")
# Where a sentence ends: a full-width stop, or an ASCII one before a space or the end.
_SENTENCE_END = re.compile(r"[。！？]|[.!?](?=\s|$)")
# The chunk each successive sentence cites: as in the captures, not 1..n in order.
_CITATION_ORDER = (4, 2, 3, 5, 1)

_DOC_NAME = {True: "百炼模拟器手册", False: "Bailian simulator handbook"}
_CHUNKS = {
    True: (
        ("模拟器是什么", "百炼模拟器在本机回答应用调用，从不连接真实服务。"),
        (
            "会话记忆",
            "每个 session_id 的对话历史空闲一小时或满五十轮后结束，之后的请求得到新的 id。",
        ),
        ("流式输出", "流式回答逐个发送事件，最后一个事件的 finish_reason 为 stop。"),
        ("引用来源", "回答里以角标注明引用的片段，doc_references 随角标出现并逐步增加。"),
        ("故障注入", "Fault 让下一个请求得到错误、断开、停顿或畸形数据，用来检验客户端的容错。"),
    ),
    False: (
        (
            "What the simulator is",
            "The simulator answers app calls locally, never the real service.",
        ),
        ("Conversation memory", "A session_id's history ends after an idle hour or fifty rounds."),
        ("Streaming", "A streamed answer sends one event at a time; the last says stop."),
        ("Citations", "Answers mark the chunks they cite; doc_references grows with the marks."),
        ("Fault injection", "A Fault gives the next request an error, a cut, a stall or junk."),
    ),
}
_RETRIEVED = 5
_FILE_ID = "file_5e1f0c7a2b9d4c8e9a6f3b1d0c7e2a4f_10000001"


@dataclass(frozen=True, slots=True)
class Chunk:
    number: int
    title: str
    content: str
    doc_name: str
    doc_id: str
    chunk_id: str
    score: float


def cite(text: str) -> str:
    """``text`` with a citation marker before each sentence end, unless it has markers.

    For example::

        cite("天气不错。去散步吧。")  # "天气不错<ref>[4]</ref>。去散步吧<ref>[2]</ref>。"
    """
    if _MARKER.search(text):
        return text
    parts: list[str] = []
    start = 0
    for index, end in enumerate(_SENTENCE_END.finditer(text)):
        number = _CITATION_ORDER[index % len(_CITATION_ORDER)]
        parts += [text[start : end.start()], f"<ref>[{number}]</ref>"]
        start = end.start()
    if not parts:
        return f"{text}<ref>[{_CITATION_ORDER[0]}]</ref>"
    parts.append(text[start:])
    return "".join(parts)


class Retrieval:
    """The chunks one RAG turn retrieved, and the ``doc_references`` its citations make."""

    __slots__ = ("_cache", "_marks", "chunks", "pipeline", "zh")

    def __init__(self, text: str, rag_options: Any, zh: bool) -> None:
        pipelines = rag_options.get("pipeline_ids") if isinstance(rag_options, dict) else None
        first = pipelines[0] if isinstance(pipelines, list) and pipelines else None
        self.pipeline = first if isinstance(first, str) else "kb-simulator"
        self.zh = zh
        self.chunks = [self.chunk(n) for n in range(1, _RETRIEVED + 1)]
        # (where the marker ends in the text, the chunk numbers it cites)
        self._marks = [
            (m.end(), [int(n) for n in _NUMBER.findall(m.group(1))])
            for m in _MARKER.finditer(text)
        ]
        self._cache: dict[tuple[tuple[int, ...], bool], list[dict[str, Any]]] = {}

    def chunk(self, number: int) -> Chunk:
        title, body = _CHUNKS[self.zh][(number - 1) % len(_CHUNKS[self.zh])]
        doc_name = _DOC_NAME[self.zh]
        return Chunk(
            number=number,
            title=title,
            content=f"【文档名】:{doc_name}\n【标题】:{title}\n【正文】:{body}\n",
            doc_name=doc_name,
            doc_id=_FILE_ID,
            chunk_id=f"llm-simulator_{self.pipeline}_{_FILE_ID}_0_{number}",
            score=round(0.62 - 0.01 * number, 4),
        )

    def references(self, offset: int, *, sse: bool) -> list[dict[str, Any]] | None:
        """The ``doc_references`` once the text up to ``offset`` was sent, or None."""
        cited: set[int] = set()
        for end, numbers in self._marks:
            if end > offset:
                break
            cited.update(numbers)
        if not cited:
            return None
        key = (tuple(sorted(cited)), sse)
        refs = self._cache.get(key)
        if refs is None:
            refs = self._cache[key] = [_reference(self.chunk(n), sse) for n in key[0]]
        return refs

    def thought(self) -> dict[str, Any]:
        """The ``agentRag`` thought, its observation a JSON string of the retrieved chunks."""
        observation = [
            {
                "content": c.content,
                "dataId": c.doc_id,
                "dataName": c.doc_name,
                "display": True,
                "id": c.chunk_id,
                "images": [],
                "referenceIndex": c.number,
                "score": c.score,
                "title": c.title,
                "webSearch": False,
            }
            for c in self.chunks
        ]
        return {
            "action_input_stream": "{}",
            "action_type": "agentRag",
            "observation": dumps(observation),
            "action_name": "知识检索",
            "action": "rag",
            "arguments": "{}",
        }


def _reference(chunk: Chunk, sse: bool) -> dict[str, Any]:
    # The captures order the keys differently in streams and in JSON answers.
    if sse:
        return {
            "images": [],
            "text": chunk.content,
            "index_id": str(chunk.number),
            "title": chunk.title,
            "doc_name": chunk.doc_name,
            "doc_id": chunk.doc_id,
        }
    return {
        "images": [],
        "doc_name": chunk.doc_name,
        "text": chunk.content,
        "index_id": str(chunk.number),
        "title": chunk.title,
        "doc_id": chunk.doc_id,
    }


def memory_thought(memory_id: str, prompt: str, memories: list[str], zh: bool) -> dict[str, Any]:
    """The long-term memory lookup: what was said before under this ``memory_id``."""
    query = dumps({"memory_id": memory_id, "query": prompt})
    said = [f"用户说过：{m}" if zh else f"The user said: {m}" for m in memories]
    return {
        "action_input_stream": query,
        "action_type": "api",
        "observation": dumps(said),
        "action_name": "长期记忆检索",
        "action": "memory",
        "arguments": query,
    }


def reasoning_text(prompt: str, history: list[tuple[str, str]], zh: bool) -> str:
    if zh:
        return f"用户说「{prompt.strip()}」。结合前面{len(history)}轮对话来回答。"
    return f'The user said "{prompt.strip()}". Answer using the {len(history)} earlier turns.'


def reasoning_thought(text: str) -> dict[str, Any]:
    """A reasoning model's thinking, in ``thought`` and again in ``response``."""
    return {
        "thought": text,
        "action_type": "reasoning",
        "response": text,
        "action_name": "思考过程",
        "action": "reasoning",
    }
