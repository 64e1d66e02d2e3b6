"""Errors a user can fix. The CLI prints them as one red line and exits non-zero."""


class InstructgenError(Exception):
    """Bad input or configuration; the message names the file, line or record and the fix."""


class InputError(InstructgenError):
    """An input file is missing, unreadable or malformed."""


class TemplateError(InstructgenError):
    """A prompt template or seed file is broken."""
