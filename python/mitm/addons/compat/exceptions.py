"""mitmproxy's exception names that scripts catch or raise."""


class MitmproxyException(Exception):
    """The base of mitmproxy's exceptions."""


class OptionsError(MitmproxyException):
    """An option is unknown or its value is wrong."""


class AddonManagerError(MitmproxyException):
    """An addon could not be added."""


class FlowReadException(MitmproxyException):
    """A flow file could not be read (flow files are not read by scripts here)."""
