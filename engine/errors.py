"""The one exception family for problems a user or the outside world causes."""


class CampaignError(Exception):
    """Bad input, a bad setting or an outside failure; shown as one line, exit status 2."""

    exit_code = 2


class NetworkUnavailable(CampaignError):
    """An outside service could not be reached after retrying."""

    exit_code = 1


class RowErrors(CampaignError):
    """A file had bad rows; `problems` holds one `FILE:LINE: field: problem` line each."""

    def __init__(self, summary: str, problems: list[str]):
        super().__init__(summary)
        self.problems = problems


def failure_text(exc: BaseException) -> str:
    """An unexpected failure as one line for people: a database error without the statement
    or the values it carried (they hold members' personal data)."""
    from sqlalchemy.exc import StatementError  # errors.py is imported everywhere: keep it light

    if isinstance(exc, StatementError):
        cause = exc.orig if exc.orig is not None else exc
        return f"database error ({type(cause).__name__})"
    text = " ".join(str(exc).split())[:300]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
