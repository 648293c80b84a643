"""The values each enumerated setting may take, in a module that imports nothing.

Importing TensorFlow takes seconds (minutes on a loaded machine): the binaries'
enum flags take their choices from here, so that --help and a bad flag answer
before it loads. The module that acts on a setting checks it against the same
tuple and says there what each value does.
"""

BACKBONE_NAMES = ("r3d_18", "r2plus1d_18", "r2plus1d_10", "s3d", "s3dg")  # asc_tf/models/__init__.py
SPEED_TASKS = ("scp", "sp")  # asc_tf/ascnet.py
APPEARANCE_LOSSES = ("regression", "infonce")  # asc_tf/ascnet.py
TAU_SCHEDULES = ("constant", "cosine")  # asc_tf/ascnet.py
SCP_MODES = ("similar", "random", "same")  # asc_tf/queue.py
OPTIMIZERS = ("lars", "sgd", "adam")  # asc_tf/pretraining.py
CLASSIFIER_OPTIMIZERS = ("sgd", "adam")  # asc_tf/evaluation/finetune.py (compile_classifier)
STRATEGIES = ("auto", "mirrored", "multi_worker", "one_device")  # asc_tf/distribute.py
