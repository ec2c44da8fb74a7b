"""The ``picker3d`` sub-commands, one module each: ``add_args(sub)`` declares its parser,
``main(args)`` runs it (thin: the work is in the engine modules it calls)."""
from . import classify, convert, copick, evaluate, masks, model_info, pick, simulate, train

# name -> (module declaring the parser, function running it)
COMMANDS = {"simulate": (simulate, simulate.main), "masks": (masks, masks.main), "evaluate": (evaluate, evaluate.main),
            "train": (train, train.main), "pick": (pick, pick.main), "classify": (classify, classify.main),
            "convert": (convert, convert.main), "copick-read": (copick, copick.main_read),
            "copick-write": (copick, copick.main_write), "model-info": (model_info, model_info.main)}
