"""Runs mitmproxy addon scripts on our engine, as ``mitmdump -s`` would:
``addons_runner.py [--set name=value]... [--no-reload] [--ca-dir DIR] [--save FILE]
script.py...``; listens on 127.0.0.1 and a free port (its CA kept in DIR if given,
its flows saved to FILE if given), logs at INFO to stdout, until SIGINT."""

import logging
import sys

from mitm import MITM, CertificateAuthority
from mitm.addons import Addons


def main(argv):
    scripts, options, reload, ca, save = [], {}, True, None, None
    args = iter(argv)
    for arg in args:
        if arg == "--set":
            name, _, value = next(args).partition("=")
            options[name] = value
        elif arg == "--ca-dir":
            ca = CertificateAuthority.init(next(args))
        elif arg == "--save":
            save = next(args)
        elif arg == "--no-reload":
            reload = False
        else:
            scripts.append(arg)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(levelname)s %(name)s: %(message)s")
    extra = {"certificate_authority": ca} if ca is not None else {}
    if save is not None:
        extra["save"] = save
    MITM(host="127.0.0.1", port=0, middlewares=[Addons(scripts, options, reload=reload)], **extra).run()


if __name__ == "__main__":
    main(sys.argv[1:])
