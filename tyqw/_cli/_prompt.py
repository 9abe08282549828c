"""Reading a prompt in ``tyqw chat``: one message, however many lines it has.

- On a terminal, GNU readline (when Python has it) gives line editing and history.
- Pasted text arrives as one prompt, newlines and all. While a prompt is read, the
  terminal is in bracketed-paste mode (``ESC[?2004h``): it wraps a paste in ``ESC[200~``
  ... ``ESC[201~``. Readline takes the marked text whole; without readline the markers
  reach us in the lines read, and the lines between them are joined here. Enter sends.
- A line ending in a backslash continues on the next line.
- Ctrl-C while typing raises ``KeyboardInterrupt`` from :meth:`Prompter.read`: the
  caller drops what was typed and asks again.
"""

from __future__ import annotations

import os
from typing import TextIO

PASTE_MODE_ON = "\x1b[?2004h"
PASTE_MODE_OFF = "\x1b[?2004l"
PASTE_START = "\x1b[200~"
PASTE_END = "\x1b[201~"


class Prompter:
    """Reads prompts from stdin with ``input()``, showing prompts when ``interactive``."""

    def __init__(self, stdin: TextIO, stdout: TextIO) -> None:
        self.interactive = stdin.isatty()
        terminal = self.interactive and stdout.isatty()
        self.out = stdout
        editor = _readline() if terminal else None
        self.readline = editor == "readline"
        # libedit garbles the paste markers; a dumb terminal (an editor's shell buffer)
        # would show the mode switch as text.
        self.paste_mode = (
            terminal
            and editor != "editline"
            and os.name == "posix"
            and os.environ.get("TERM", "dumb") != "dumb"
        )
        self.first, self.more = ("> ", "... ") if self.interactive else ("", "")

    def read(self) -> str | None:
        """The next prompt without its final newline; None at the end of input.

        Example::

            while (prompt := prompter.read()) is not None:
                send(prompt)
        """
        lines: list[str] = []
        while True:
            try:
                line = self._line(self.more if lines else self.first)
            except EOFError:
                if not lines:
                    return None
                break
            if line.endswith("\\"):
                lines.append(line[:-1])
                continue
            lines.append(line)
            break
        return "\n".join(lines).rstrip("\r\n")

    def interrupted(self) -> None:
        """Show that Ctrl-C dropped the line (readline does not echo the ``^C``)."""
        self._write("^C\n" if self.readline else "\n")

    def _line(self, prompt: str) -> str:
        if self.paste_mode:
            self._write(PASTE_MODE_ON)
        try:
            line = input(prompt)
            # Without readline a paste comes as lines, the first marked at its start.
            while line.rfind(PASTE_START) > line.rfind(PASTE_END):
                try:
                    line += "\n" + input()
                except EOFError:
                    break
        finally:
            if self.paste_mode:
                self._write(PASTE_MODE_OFF)  # a paste during the reply is plain typing
        return line.replace(PASTE_START, "").replace(PASTE_END, "")

    def _write(self, control: str) -> None:
        self.out.write(control)
        self.out.flush()


def _readline() -> str | None:
    """Import readline, which input() then uses: "readline" (GNU), "editline" or None."""
    try:
        import readline
    except ImportError:
        return None
    backend = getattr(readline, "backend", None)  # Python 3.13+
    if backend is None:
        backend = "editline" if "libedit" in (readline.__doc__ or "") else "readline"
    return str(backend)
