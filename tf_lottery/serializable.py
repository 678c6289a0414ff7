"""ConfigSerializable: the Keras serialisation pair and a readable repr for small objects whose
constructor arguments are their whole config (mask rules, schedules, pruning schedules)."""


class ConfigSerializable:
    """Subclasses implement `get_config()` -> {constructor argument: value}."""

    def get_config(self):
        raise NotImplementedError

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"
