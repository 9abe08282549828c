"""The built-in bot: deterministic, bilingual, and visibly aware of the conversation."""

from __future__ import annotations

import re
from collections.abc import Callable

#: ``reply(prompt, history) -> text``; history is the earlier ``(user, assistant)`` turns.
ReplyFunc = Callable[[str, list[tuple[str, str]]], str]

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_ZH_NAME = re.compile(r"我(?:叫|的名字(?:是|叫))\s*([^\s，。！？、；：,.!?;:「」“”\"']{1,20})")
_EN_NAME = re.compile(r"\b(?:my name is|my name's|call me)\s+([^\s,.!?;:\"]{1,40})", re.I)
_ZH_ASK = re.compile(r"我叫什么|我的名字(?:是|叫)?什么|我是谁|(?:记得|知道)我的名字")
_EN_ASK = re.compile(
    r"\bwhat(?:'s| is) my name\b|\bwho am i\b|\b(?:know|remember) my name\b", re.I
)
_ZH_HELLO = re.compile(r"^(?:你好|您好|嗨|哈喽|早上好|下午好|晚上好)")
_EN_HELLO = re.compile(r"^(?:hi|hello|hey|good (?:morning|afternoon|evening))\b", re.I)


def is_chinese(text: str) -> bool:
    """True when ``text`` has CJK characters: the bot then answers in Chinese."""
    return _CJK.search(text) is not None


def _name_in(text: str) -> str | None:
    if _ZH_ASK.search(text) or _EN_ASK.search(text):
        return None
    match = _ZH_NAME.search(text) or _EN_NAME.search(text)
    return match.group(1) if match else None


def default_reply(prompt: str, history: list[tuple[str, str]]) -> str:
    """The built-in bot: deterministic, bilingual, and visibly aware of the conversation.

    It greets, remembers a name told with "我叫X" / "my name is X", answers "我叫什么名字"
    / "what's my name" with it, and otherwise repeats the turn number, the prompt and the
    previous prompt. Chinese replies when the prompt has CJK characters::

        >>> default_reply("what's my name?", [("my name is Ada", "Nice to meet you")])
        'Your name is Ada. You told me earlier in this conversation.'
    """
    said = prompt.strip()
    zh = is_chinese(said)
    known = next((n for user, _ in reversed(history) if (n := _name_in(user))), None)
    if _ZH_ASK.search(said) or _EN_ASK.search(said):
        if known:
            if zh:
                return f"你叫{known}。你在前面的对话里告诉过我，我一直记着呢。"
            return f"Your name is {known}. You told me earlier in this conversation."
        if zh:
            return "你还没告诉我你的名字呢。说一句「我叫……」，我就会记住。"
        return "You haven't told me your name yet. Say \"my name is ...\" and I'll remember it."
    if name := _name_in(said):
        if zh:
            return f"很高兴认识你，{name}！我记住你的名字了，之后可以问我「我叫什么名字」。"
        return f"Nice to meet you, {name}! I'll remember your name; ask me \"what's my name?\"."
    if _ZH_HELLO.search(said) or _EN_HELLO.search(said):
        if zh:
            who = f"，{known}" if known else ""
            return f"你好{who}！我是百炼应用的本地模拟器，可以陪你测试多轮对话。想聊点什么？"
        who = f", {known}" if known else ""
        return (
            f"Hello{who}! I'm the local Bailian simulator, here to help you test "
            "multi-turn chat. What shall we talk about?"
        )
    turn = len(history) + 1
    previous = history[-1][0].strip() if history else None
    if zh:
        rest = f"上一句你说的是「{previous}」。" if previous else "这是我们对话的第一句。"
        return f"第{turn}轮：你说「{said}」。{rest}"
    rest = f' Before that you said "{previous}".' if previous else " This is where we start."
    return f'Turn {turn}: you said "{said}".{rest}'
