"""One task of a 2-worker MultiWorkerMirroredStrategy pretraining run on localhost.

    TF_CONFIG=... python tests/scripts/multi_worker.py RECORDS MODEL_DIR STEPS OUT.npz

Trains with `asc_tf.pretraining.run` and writes every variable of the model
(online, target, BatchNorm statistics, heads, queue, data position) and of
its optimiser, by path, to OUT.npz, for the test to compare across workers.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from asc_tf import distribute, pretraining  # noqa: E402

tf.debugging.disable_traceback_filtering()  # a failure in the log names the library frame


def main(records, model_dir, steps, out):
    strategy = distribute.make_strategy("auto")
    assert isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy), type(strategy)
    config = pretraining.PretrainConfig(
        train_data=records, model_dir=model_dir, backbone="r3d_18", width=0.125, frames=4, crop_size=16,
        speed_set=(1, 2), global_batch_size=4, queue_size=32, dim=8, predictor_hidden=16, train_steps=int(steps),
        checkpoint_every=2, log_every=1, shuffle_buffer=8, seed=3,
    )
    summary = pretraining.run(config, strategy)
    model = summary["model"]
    state = {f"model/{v.path}": v.numpy() for v in model.variables}
    state.update({f"optimizer/{v.path}": v.numpy() for v in model.optimizer.variables})
    np.savez(out, **state)
    print(f"task {strategy.cluster_resolver.task_id}: {summary['start_step']}→{summary['end_step']} "
          f"loss {summary['last_logs']['loss']:.6f}")


if __name__ == "__main__":
    main(*sys.argv[1:])
