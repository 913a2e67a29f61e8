"""Runs mitmproxy addon scripts on our engine, as ``mitmdump -s`` would:
``addons_runner.py [--set name=value]... [--no-reload] script.py...``; listens on
127.0.0.1 and a free port, logs at INFO to stdout, until SIGINT."""

import logging
import sys

from mitm import MITM
from mitm.addons import Addons


def main(argv):
    scripts, options, reload = [], {}, True
    args = iter(argv)
    for arg in args:
        if arg == "--set":
            name, _, value = next(args).partition("=")
            options[name] = value
        elif arg == "--no-reload":
            reload = False
        else:
            scripts.append(arg)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(levelname)s %(name)s: %(message)s")
    MITM(host="127.0.0.1", port=0, middlewares=[Addons(scripts, options, reload=reload)]).run()


if __name__ == "__main__":
    main(sys.argv[1:])
