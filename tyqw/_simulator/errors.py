"""DashScope's error answers: the code and message for a status or a code, and refusals.

The messages are the service's own (protocol reference §6.2): a code has its message
whatever the status it comes with, so ``DataInspectionFailed`` never reads like a bad
request body; a status alone gets the code and message the service uses for it.
"""

from __future__ import annotations

from http import HTTPStatus

# (code, message) per HTTP status.
_BY_STATUS: dict[int, tuple[str, str]] = {
    400: ("InvalidParameter", "Required body invalid, please check the request body format."),
    401: ("InvalidApiKey", "Invalid API-key provided."),
    403: ("AccessDenied", "Access denied."),
    404: ("NotFound", "The requested resource was not found."),
    408: ("RequestTimeOut", "Request timed out, please try again later."),
    429: ("Throttling", "Requests throttling triggered."),
    500: (
        "InternalError",
        "An internal error has occured, please try again later or contact service support.",
    ),
    502: ("ServiceUnavailable", "Bad gateway, please try again later."),
    503: ("ServiceUnavailable", "Service unavailable, please try again later."),
    504: ("GatewayTimeout", "Gateway timeout, please try again later."),
}

# The message of each code, where it is not the one of its status.
_BY_CODE: dict[str, str] = {
    "DataInspectionFailed": "Input or output data may contain inappropriate content.",
    "Arrearage": "Access denied, please make sure your account is in good standing.",
    "FlowNotPublished": "Flow has not published yet, please publish flow and try again.",
    "App.AccessDenied": "App access denied.",
    "Workspace.AccessDenied": "Workspace access denied.",
    "Model.AccessDenied": "Model access denied.",
    "Throttling.RateQuota": "Requests rate limit exceeded, please try again later.",
    "Throttling.AllocationQuota": "Allocated quota exceeded, please increase your quota limit.",
    "AppProcessFailed": "Failed to proceed application request.",
    "ModelUnavailable": "Model is unavailable, please try again later.",
    "InternalError.Timeout": "An internal timeout error has occured during execution.",
    **dict(_BY_STATUS.values()),
}

BAD_BODY = "Required body invalid, please check the request body format."
BAD_APP_ID = "Required parameter(AppId) missing or invalid, please check the request parameters."
NO_PROMPT = (
    "Required parameter(prompt or messages) missing or invalid, please check the request "
    "parameters."
)
NO_USER_TURN = "The input messages do not contain elements with the role of user."


def describe(status: int, code: str | None = None, message: str | None = None) -> tuple[str, str]:
    """The ``(code, message)`` of an error: given ones win, then the code's, then the status's.

    For example::

        describe(429)                          # ("Throttling", "Requests throttling triggered.")
        describe(400, "DataInspectionFailed")  # (..., "Input or output data may contain ...")
    """
    default = _BY_STATUS.get(status)
    if default is None:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Error"
        default = (phrase.replace(" ", ""), f"{phrase}.")
    if not code or code == default[0]:
        return default[0], message or default[1]
    return code, message or _BY_CODE.get(code, default[1])


class Refusal(Exception):
    """A request the service refuses before answering it.

    ``inband`` refusals are answered on a streaming request the way the service answers a
    bad app id: HTTP 200 and one ``event:error`` frame; the others always as HTTP JSON.
    """

    def __init__(
        self, status: int, code: str | None = None, message: str | None = None, *, inband: bool
    ) -> None:
        self.status = status
        self.code, self.message = describe(status, code, message)
        self.inband = inband
        super().__init__(self.message)


def invalid(message: str) -> Refusal:
    """A 400 ``InvalidParameter`` refusal, in band on streams."""
    return Refusal(400, "InvalidParameter", message, inband=True)
