"""Every option of ``train``, ``pick`` and ``classify`` declared once: name, default, help,
group, conversion and check (:class:`Option`). The command line's argparse groups, the
engine's option objects (:class:`TrainOptions`, :class:`PickOptions`,
:class:`ClassifyOptions`) and the Scipion protocols' ``_validate`` (:func:`problems`) are made
from them. Torch-free: the Scipion layer imports it."""
from .base import Option, add_options, checked, converted, problems, to_argv
from .classify import CLASSIFY_OPTIONS, ClassifyOptions
from .pick import PICK_OPTIONS, PickOptions, z_range
from .train import REMOVED_TRAIN_FLAGS, TRAIN_OPTIONS, TrainOptions

COMMAND_OPTIONS = {"train": TRAIN_OPTIONS, "pick": PICK_OPTIONS, "classify": CLASSIFY_OPTIONS}


def check(command, values):
    """The problems the declared checks of ``command`` find in ``values`` (name -> value as a
    user gives it; missing names take their defaults): a list of one-line messages, empty
    when all is well. The protocols' ``_validate`` calls this."""
    from ..errors import InputError
    opts = COMMAND_OPTIONS[command]
    msgs, good = [], {}
    for opt in opts:        # every option converted, each failure a message of its own
        try:
            good.update(converted([opt], values))
        except InputError as exc:
            msgs.append(str(exc))
            good[opt.name] = opt.default if opt.convert is None else None
    failed = {m.split(":")[0] for m in msgs}
    return msgs + [m for m in problems(opts, good) if m.split(":")[0] not in failed]


def option_help(command, name):
    """The declared help of ``command``'s option ``name`` (a protocol form's help)."""
    return next(o.help for o in COMMAND_OPTIONS[command] if o.name == name).replace("%%", "%")


__all__ = ["option_help", "Option", "add_options", "checked", "converted", "problems", "check", "to_argv", "COMMAND_OPTIONS",
           "TRAIN_OPTIONS", "TrainOptions", "REMOVED_TRAIN_FLAGS", "PICK_OPTIONS", "PickOptions", "z_range",
           "CLASSIFY_OPTIONS", "ClassifyOptions"]
