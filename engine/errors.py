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
