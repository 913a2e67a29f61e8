"""The original's way to run a proxy: ``MITM(...).run()``, until Ctrl-C."""

from mitm import MITM, middleware

MITM(host="127.0.0.1", port=0, middlewares=[middleware.Log]).run()
