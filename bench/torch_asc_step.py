"""PyTorch reference of one ASCNet pretraining step, driven line by line over stdin/stdout.

Runs in its own process: PyTorch and TensorFlow must not share one.
`bench.train_step` starts it and sends commands, one per line:

  batch N    makes a fresh in-memory batch of N clip pairs; answers "ok"
  step [P]   runs and times one training step at precision P: "float32" (the
             default) or "bfloat16" (the forward passes under
             `torch.autocast("cpu", dtype=torch.bfloat16)`, losses, queue and
             EMA in float32, as TF's mixed_bfloat16); answers "<seconds> <loss>"
  quit       exits

On start it prints "ready <torch version>". Nothing else goes to stdout.

The step is the same algorithm as `asc_tf.ascnet.ASCNet.train_step` with the
paper's settings: torchvision r3d_18 (fc = Identity; `--width` scales its
channels as `asc_tf.models` does) online encoder and a deep-copied EMA target;
projection heads g_a, g_m (one Linear to `--dim` = 256 each); predictors h_a,
h_m (256→`--hidden` = 4096→BN→ReLU→256). The target encodes both clips in
one batch under no_grad with BatchNorm in training mode; the SCP partner of
each anchor is the argmax of the dot product between a_j and the appearance
keys of the queue (K rows) and the batch's 2N clips, restricted to other
videos whose other clip (the target) is at the anchor's speed; L = ½(2 − 2cos)_m + ½(2 − 2cos)_a; backward;
LARS (momentum 0.9, weight decay 1e-6 and trust ratio η = 0.001 for tensors
of rank ≥ 2); EMA (τ = 0.99) of the target encoder and heads; queue write.
Input is channels-first, [N, 3, T, H, W].

    python -m bench.torch_asc_step --frames 16 --size 112 --queue_size 65536
    python -m bench.torch_asc_step --width 0.25 --frames 8 --size 32 --queue_size 1024 --dim 64 --hidden 256 \
        --speeds 1 2
"""

import argparse
import copy
import os
import sys
import time

import torch
import torchvision
from torch import nn
from torch.nn import functional as F
from torchvision.models.video import resnet

PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16}


def r3d_18(width=1.0):
    """torchvision's r3d_18 without its classifier; `width` scales every channel count (1.0: the model itself).

    Output [N, 512 · width]. The scaled channels round as `asc_tf.models.layers.scaled` does.
    """
    model = torchvision.models.video.r3d_18(weights=None)
    if width != 1.0:
        planes = [max(1, int(round(c * width))) for c in (64, 128, 256, 512)]
        model.inplanes = planes[0]  # torchvision's _make_layer grows the model from this
        model.stem = nn.Sequential(
            nn.Conv3d(3, planes[0], (3, 7, 7), (1, 2, 2), (1, 3, 3), bias=False),
            nn.BatchNorm3d(planes[0]),
            nn.ReLU(inplace=True),
        )
        for index, name in enumerate(("layer1", "layer2", "layer3", "layer4")):
            layer = model._make_layer(resnet.BasicBlock, resnet.Conv3DSimple, planes[index], 2, stride=1 + (index > 0))
            setattr(model, name, layer)
        for module in model.modules():  # torchvision's initialisation
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm3d):
                nn.init.constant_(module.weight, 1)
                nn.init.constant_(module.bias, 0)
    model.fc = nn.Identity()
    return model


def predictor(dim, hidden):
    return nn.Sequential(nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim))


class LARS(torch.optim.Optimizer):
    """Layer-wise Adaptive Rate Scaling as in `asc_tf.optim.LARS` (no Nesterov).

    For rank ≥ 2 tensors: g ← g + wd·w, then g ← g·η‖w‖/‖g‖ (when both norms are
    positive); for all: v ← m·v + g, w ← w − lr·v.
    """

    def __init__(self, params, lr, momentum=0.9, weight_decay=1e-6, eta=0.001):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if p.ndim >= 2:
                    g = g.add(p, alpha=group["weight_decay"])
                    w_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(g)
                    trust = torch.where(
                        (w_norm > 0) & (g_norm > 0), group["eta"] * w_norm / g_norm.clamp_min(1e-30),
                        torch.ones_like(w_norm),
                    )
                    g = g.mul(trust)
                state = self.state[p]
                if "velocity" not in state:
                    state["velocity"] = torch.zeros_like(p)
                velocity = state["velocity"]
                velocity.mul_(group["momentum"]).add_(g)
                p.sub_(velocity, alpha=group["lr"])


class ASCStep:
    """Online and target networks, LARS, the feature queue, and one training step."""

    def __init__(self, frames, size, queue_size, width=1.0, dim=256, hidden=4096, speeds=(4, 8), tau=0.99, gamma=0.5,
                 seed=0):
        torch.manual_seed(seed)
        self.frames, self.size, self.speeds, self.tau, self.gamma = frames, size, tuple(speeds), tau, gamma
        self.autocast = None
        encoder = r3d_18(width)
        features = max(1, int(round(512 * width)))
        self.online = nn.ModuleDict(
            dict(encoder=encoder, appearance=nn.Linear(features, dim), speed=nn.Linear(features, dim))
        )
        self.target = copy.deepcopy(self.online)
        for p in self.target.parameters():
            p.requires_grad_(False)
        self.predictors = nn.ModuleDict(dict(appearance=predictor(dim, hidden), speed=predictor(dim, hidden)))
        self.online.train()
        self.target.train()
        self.predictors.train()
        self.trainable = list(self.online.parameters()) + list(self.predictors.parameters())
        self.ema_pairs = list(zip(self.target.parameters(), self.online.parameters(), strict=True))
        self.optimizer = None
        # Queue: ring buffer of target keys, speed features, video ids, speeds.
        self.queue_keys = torch.zeros(queue_size, dim)
        self.queue_feats = torch.zeros(queue_size, dim)
        self.queue_ids = torch.zeros(queue_size, dtype=torch.int64)
        self.queue_speeds = torch.zeros(queue_size, dtype=torch.int32)
        self.pointer = 0
        self.batch = None

    def set_batch(self, batch, seed=1):
        generator = torch.Generator().manual_seed(seed)
        shape = (batch, 3, self.frames, self.size, self.size)
        self.batch = dict(
            view_i=torch.randn(shape, generator=generator),
            view_j=torch.randn(shape, generator=generator),
            video_id=torch.arange(batch, dtype=torch.int64),
            speed_i=torch.tensor(self.speeds, dtype=torch.int32)[torch.randint(2, (batch,), generator=generator)],
            speed_j=torch.tensor(self.speeds, dtype=torch.int32)[torch.randint(2, (batch,), generator=generator)],
        )
        # The linear scaling rule, as `asc_tf.pretraining.make_optimizer` at step 0 without warm-up.
        lr = 0.3 * batch / 128
        if self.optimizer is None:
            self.optimizer = LARS(self.trainable, lr=lr)
        else:
            for group in self.optimizer.param_groups:
                group["lr"] = lr

    def _precision(self):
        """The forward passes' autocast context: bfloat16 compute, or none (float32)."""
        return torch.autocast("cpu", dtype=self.autocast, enabled=self.autocast is not None)

    def _target(self, clips):
        with torch.no_grad():
            with self._precision():
                features = self.target["encoder"](clips)
                keys, feats = self.target["appearance"](features), self.target["speed"](features)
            # Normalised in float32, as the queue holds them (TF's heads are float32 under mixed precision).
            keys, feats = F.normalize(keys.float(), dim=-1), F.normalize(feats.float(), dim=-1)
        return keys, feats

    @staticmethod
    def _regression(prediction, target):
        return (F.normalize(prediction.float(), dim=-1) - target).square().sum(-1)

    def step(self):
        data = self.batch
        batch = data["view_i"].shape[0]
        ids, speed_i, speed_j = data["video_id"], data["speed_i"], data["speed_j"]

        keys, feats = self._target(torch.cat([data["view_i"], data["view_j"]]))
        key_i, key_j = keys[:batch], keys[batch:]
        feat_i, feat_j = feats[:batch], feats[batch:]

        # SCP partner: the video of another clip whose key is most similar to a_j, queue + batch; the
        # target is that video's other clip, at the anchor's speed (rows pair a key with the other clip).
        with torch.no_grad():
            filled = min(self.pointer, self.queue_keys.shape[0])
            valid = torch.cat([torch.arange(self.queue_keys.shape[0]) < filled, torch.ones(2 * batch, dtype=torch.bool)])
            cand_keys = torch.cat([self.queue_keys, key_i, key_j])
            cand_feats = torch.cat([self.queue_feats, feat_j, feat_i])
            cand_ids = torch.cat([self.queue_ids, ids, ids])
            cand_speeds = torch.cat([self.queue_speeds, speed_j, speed_i])
            allowed = valid[None] & (ids[:, None] != cand_ids[None]) & (speed_i[:, None] == cand_speeds[None])
            scores = (key_j @ cand_keys.T).masked_fill(~allowed, float("-inf"))
            chosen = scores.argmax(dim=1)
            has_target = allowed.any(dim=1)
            scp_targets = cand_feats[chosen] * has_target[:, None].float()

        with self._precision():
            features = self.online["encoder"](data["view_i"])
            pred_a = self.predictors["appearance"](self.online["appearance"](features))
            pred_m = self.predictors["speed"](self.online["speed"](features))
        loss_a = self._regression(pred_a, key_j).mean()
        mask = has_target.float()
        loss_m = (self._regression(pred_m, scp_targets) * mask).sum() / mask.sum().clamp_min(1.0)
        loss = self.gamma * loss_m + (1 - self.gamma) * loss_a

        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

        with torch.no_grad():
            for target, online in self.ema_pairs:
                target.mul_(self.tau).add_(online, alpha=1 - self.tau)
            rows = 2 * batch
            slots = (self.pointer + torch.arange(rows)) % self.queue_keys.shape[0]
            self.queue_keys[slots] = torch.cat([key_i, key_j])
            self.queue_feats[slots] = torch.cat([feat_j, feat_i])
            self.queue_ids[slots] = torch.cat([ids, ids])
            self.queue_speeds[slots] = torch.cat([speed_j, speed_i])
            self.pointer += rows
        return loss.item()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--queue_size", type=int, default=65536)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--speeds", type=int, nargs=2, default=[4, 8])
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    runner = ASCStep(args.frames, args.size, args.queue_size, width=args.width, dim=args.dim, hidden=args.hidden,
                     speeds=args.speeds)
    print(f"ready {torch.__version__}", flush=True)
    for line in sys.stdin:
        command = line.split()
        if not command:
            continue
        if command[0] == "batch":
            runner.set_batch(int(command[1]))
            print("ok", flush=True)
        elif command[0] == "step":
            precision = command[1] if len(command) > 1 else "float32"
            if precision not in PRECISIONS:
                print(f"error unknown precision {precision!r}", flush=True)
                continue
            runner.autocast = PRECISIONS[precision]
            start = time.perf_counter()
            loss = runner.step()  # returns the loss as a Python float: the step has finished
            print(f"{time.perf_counter() - start:.6f} {loss:.6f}", flush=True)
        elif command[0] == "quit":
            break
        else:
            print(f"error unknown command {command[0]!r}", flush=True)


if __name__ == "__main__":
    main()
