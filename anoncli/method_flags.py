"""The method flags among `anoncli anonymize`'s extra arguments, told apart from mistyped options.

Click hands every option it does not know to the command (``ignore_unknown_options``), so a
typo of a general option (``--methd``) arrives here beside the method's own flags. An option is
a method flag only when the chosen method declares it; anything else is named as what it is.
"""
from __future__ import annotations

import difflib
from typing import Iterable

from .methods.base import MethodSpec


class UnknownOption(ValueError):
    """An option neither the command nor the chosen method declares."""


def method_flag_values(args: list[str], spec: MethodSpec, general_options: Iterable[str],
                       other_methods: Iterable[MethodSpec] = ()) -> dict[str, str]:
    """Raw values of ``spec``'s flags in ``args``: ``--name value``, ``--name=value``, ``--flag``, ``--no-flag``.

    Raises ``UnknownOption`` for an option no one declares (with the nearest of ``general_options``
    and ``spec``'s flags as a suggestion), ``ValueError`` for another method's flag or a stray argument.
    """
    declared = {p.name: p for p in spec.params}
    values: dict[str, str] = {}
    i = 0
    while i < len(args):
        token = args[i]
        if token == "--" or not token.startswith("-") or token == "-":
            raise ValueError(f"unexpected argument {token!r}")
        flag, has_value, value = token.partition("=")
        if not has_value and i + 1 < len(args) and not args[i + 1].startswith("--"):
            has_value, value = True, args[i + 1]
            i += 1
        name = flag[2:].replace("-", "_") if flag.startswith("--") else None
        if name in declared:
            values[name] = value if has_value else "true"
        elif name and name.startswith("no_") and not has_value and declared.get(name[3:]) and declared[name[3:]].type is bool:
            values[name[3:]] = "false"
        else:
            raise _not_declared(flag, spec, general_options, other_methods)
        i += 1
    return values


def _not_declared(flag: str, spec: MethodSpec, general_options: Iterable[str],
                  other_methods: Iterable[MethodSpec]) -> ValueError:
    method_flags = [p.flag for p in spec.params]
    owners = sorted({m.name for m in other_methods if m.name != spec.name and flag in {p.flag for p in m.params}})
    if owners:
        return ValueError(f"method {spec.name!r} has no flag {flag}; its flags: {', '.join(method_flags) or 'none'} "
                          f"({flag} belongs to {', '.join(owners)})")
    nearest = difflib.get_close_matches(flag, [*general_options, *method_flags], n=1)
    hint = (f"did you mean {nearest[0]}?" if nearest else
            f"see `anoncli anonymize --help`; method {spec.name}'s flags: {', '.join(method_flags) or 'none'}")
    return UnknownOption(f"no such option {flag}; {hint}")
