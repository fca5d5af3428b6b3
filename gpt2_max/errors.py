"""Errors whose message is meant for the person using the explorer."""


class ExplorerError(Exception):
    """A problem with the user's request or setup; the message says how to fix it."""


class ModelLoadError(ExplorerError):
    """A checkpoint could not be found, downloaded or understood."""


class InputError(ExplorerError):
    """A request's input is out of range (empty text, too many tokens, bad settings)."""
