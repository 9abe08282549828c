"""What the tyqw command shows through the turn-level events: thoughts once, citation
markers as plain [n] (however the stream splits them), the cited documents under the
reply, and /usage."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from tyqw import Session
from tyqw._cli._output import Printer
from tyqw.testing import BailianSimulator

from .cli_helpers import clean_env, tyqw_async


@pytest.mark.parametrize("chunk_size", [1, 3, 4, 7, 50])
async def test_markers_show_as_plain_numbers_and_sources_follow(
    tmp_path: Path, chunk_size: int
) -> None:
    """The printed reply is the Reply's display_text whatever the pieces' sizes, and
    each cited document gets one line after it, in the order the text cites them."""
    async with BailianSimulator(chunk_size=chunk_size) as sim:
        out = io.StringIO()
        printer = Printer(out)
        async with Session(
            sim.app_id, api_key=sim.api_key, base_url=sim.base_url, state_dir=tmp_path
        ) as session:
            session.on("message", printer.message)
            session.on("reference", printer.reference)
            reply = await session.send("介绍一下西湖。", rag_options={"pipeline_ids": ["kb"]})
        printer.end_line()
        printer.references()
    assert reply.citations and "<ref>" in reply.text
    lines = out.getvalue().splitlines()
    assert "\n".join(lines[: -len(reply.citations)]) == reply.display_text
    assert [line.split()[0] for line in lines[-len(reply.citations) :]] == [
        c.marker for c in reply.citations
    ]


async def test_chat_usage_command(tmp_path: Path) -> None:
    """/usage shows the tokens the conversation has used, per model, and adds up."""
    async with BailianSimulator() as sim:
        env = clean_env(
            tmp_path,
            DASHSCOPE_API_KEY=sim.api_key,
            DASHSCOPE_BASE_URL=sim.base_url,
            DASHSCOPE_APP_ID=sim.app_id,
        )
        code, out, err = await tyqw_async(
            env, "chat", stdin="/usage\n你好\n/usage\n再说一句\n/usage\n"
        )
    assert (code, err) == (0, "")
    assert "no tokens used yet in this conversation" in out
    counts = [
        (int(a), int(b))
        for a, b in re.findall(rf"{sim.model_id}: (\d+) input, (\d+) output tokens", out)
    ]
    assert len(counts) == 2 and counts[1][0] > counts[0][0] and counts[1][1] > counts[0][1]
