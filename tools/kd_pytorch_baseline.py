#!/usr/bin/env python3
"""Plain-PyTorch baseline for the README's KD benchmark.

Measures what a PyTorch user gets on this machine, with
torch.set_num_threads(--threads), for the same training step as

  ./tools/bazel run //benchmarks:kd -- --scheduler=all --stages=2 --microbatches=4

at the benchmark's defaults, on the whole mini-batch (no pipeline and no
micro-batches). Compare its samples/s with the table that the benchmark prints.

One training step, as in the C++ code:
  * Data (synthetic, the benchmark's --data default,
    benchmarks/train_benchmark.cc:65): num_batches = 4 distinct batches
    (engine/trainer.h:89, engine/recipe.h:69), generated up front, each
    images = randn(B, 1, 28, 28) then labels = randint(0, 10, (B,)), cycled
    (data/image_data.cc and algorithms/image_recipe.cc).
  * Teacher: ResNet with widths 32,64,128 and basic blocks 2,2,2
    (algorithms/kd.cc:56), frozen (algorithms/kd.h:30, TeacherKind::kFrozen), run in eval
    mode (core/algorithm.h:75 TeacherInTrainMode() = false, used at
    backends/executor.cc:144-148), no gradients (requires_grad false,
    executor.cc:149; NoGradGuard, executor.cc:456). Untrained, as in the
    benchmark (no --teacher_checkpoint).
  * Student: ResNet with widths 16,32,64 and blocks 1,1,1 (algorithms/kd.cc:55),
    train mode (executor.cc:134).
  * ResNet (models/resnet.cc:12-47 BasicBlock, :51-66 Stem, :69-79 Head,
    :109-123 AddResNetBody, :157-162 MakeResNet): 1 input channel,
    10 classes (models/resnet.h:13-14); stem conv3x3(stride 1, pad 1,
    no bias)-BN-ReLU; per group g, blocks_per_group[g] basic blocks, the first
    block of every group after the first with stride 2; basic block
    relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)), convs 3x3 pad 1 no
    bias, shortcut = conv1x1(stride, no bias)-BN when the stride or width
    changes, identity otherwise; head = global mean over H,W then Linear.
    BatchNorm2d with LibTorch's defaults (eps 1e-5, momentum 0.1), which are
    PyTorch's.
  * Loss (algorithms/kd.cc:29-39, defaults kd.h:18-20):
      CE(s, y) + lambda * T^2 * KL_batchmean(log_softmax(s/T) || softmax(t/T))
    with T = 4.0, lambda = 0.1, T^2 scaling on; the teacher logits detached
    (kd.cc:45).
  * Optimizer (engine/optimizer.cc, defaults cli/flags.cc):
    torch.optim.SGD(lr=0.05, momentum=0.9, weight_decay=0), no warm-up or
    decay (flags.cc:32-34), no gradient clipping (flags.cc:36); float32
    (engine/trainer.h:81).
  * Batch: --batch_size=64 (cli/flags.cc). Seed 0
    (cli/flags.cc): torch.manual_seed(0), then the student, then the
    teacher are built (engine/trainer.cc:322-323, algorithms/kd.cc:79-86),
    then the data are drawn (engine/trainer.cc:551).

Not the same as the C++ run: the pipelined schedulers split each mini-batch
into --microbatches=4 micro-batches, so their student's batch-norm statistics
come from 16 samples rather than 64 (the loss itself is the mini-batch's
mean either way, backends/executor.cc:467-540); C++ ranks run with
--threads_per_device=1 intra-op thread each (cli/flags.cc) while
this runs one process with --threads threads. Initial values come from the
same seed but are not claimed to be bit-identical with LibTorch's.

Run it (any Python with PyPI's torch; the project's golden venv if present):
  ~/.cache/tspipe/golden-venv/bin/python tools/kd_pytorch_baseline.py
Where there is no such venv (tools/setup.sh unpacks only LibTorch, not the
Python package), make one as tools/make_bert_goldens.py does (a large
download: the torch wheel is about 530 MB, its CUDA dependencies more):
  python3 -m venv ~/.cache/tspipe/golden-venv
  ~/.cache/tspipe/golden-venv/bin/pip install torch==2.11.0
  python3 tools/kd_pytorch_baseline.py --steps 40 --warmup 8 --threads 2 --repeats 5
It prints the parameter counts of teacher and student, then one line
  pytorch_kd samples_per_second=<x> threads=<n> batch=<b>
(the median over --repeats timed runs of --steps steps each, after --warmup
untimed steps).
"""
import argparse
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# algorithms/kd.cc:55-56 and models/resnet.h:13-14.
STUDENT_WIDTHS, STUDENT_BLOCKS = (16, 32, 64), (1, 1, 1)
TEACHER_WIDTHS, TEACHER_BLOCKS = (32, 64, 128), (2, 2, 2)
IN_CHANNELS, NUM_CLASSES, IMAGE_SIZE = 1, 10, 28
# algorithms/kd.h:18-20.
TEMPERATURE, LAMBDA, SCALE_BY_T_SQUARED = 4.0, 0.1, True
# cli/flags.cc; engine/trainer.h.
BATCH_SIZE, LEARNING_RATE, MOMENTUM, WEIGHT_DECAY, SEED, NUM_BATCHES = 64, 0.05, 0.9, 0.0, 0, 4


class BasicBlock(nn.Module):
    """models/resnet.cc BasicBlockImpl."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + (x if self.shortcut is None else self.shortcut(x)))


class Stem(nn.Module):
    """models/resnet.cc StemImpl: conv3x3-BN-ReLU."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x)))


class Head(nn.Module):
    """models/resnet.cc HeadImpl: global average pool and a linear classifier."""

    def __init__(self, cin, classes):
        super().__init__()
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        return self.fc(x.mean(dim=(2, 3)))


def make_resnet(widths, blocks_per_group, in_channels=IN_CHANNELS, num_classes=NUM_CLASSES):
    """models/resnet.cc MakeResNet / AddResNetBody: stem, basic blocks, head."""
    layers = [Stem(in_channels, widths[0])]
    cin = widths[0]
    for g, (w, n) in enumerate(zip(widths, blocks_per_group)):
        for b in range(n):
            stride = 2 if (g > 0 and b == 0) else 1
            layers.append(BasicBlock(cin, w, stride))
            cin = w
    layers.append(Head(cin, num_classes))
    return nn.Sequential(*layers)


def kd_loss(s, t, y):
    """algorithms/kd.cc KdLoss."""
    ce = F.cross_entropy(s, y)
    kl = F.kl_div(F.log_softmax(s / TEMPERATURE, dim=1), F.softmax(t / TEMPERATURE, dim=1),
                  reduction="batchmean")
    scale = TEMPERATURE * TEMPERATURE if SCALE_BY_T_SQUARED else 1.0
    return ce + LAMBDA * scale * kl


def count(module):
    return sum(p.numel() for p in module.parameters())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=40, help="timed training steps per repeat")
    ap.add_argument("--warmup", type=int, default=8, help="untimed steps before timing")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--batch_size", type=int, default=BATCH_SIZE, help="samples per step")
    ap.add_argument("--repeats", type=int, default=1,
                    help="timed runs; the median is reported")
    a = ap.parse_args()
    if a.steps < 1 or a.warmup < 0 or a.threads < 1 or a.batch_size < 1 or a.repeats < 1:
        ap.error("--steps, --threads, --batch_size, --repeats must be >= 1, --warmup >= 0")

    torch.set_num_threads(a.threads)
    torch.manual_seed(SEED)
    student = make_resnet(STUDENT_WIDTHS, STUDENT_BLOCKS)  # Built first, as kd.cc:79.
    teacher = make_resnet(TEACHER_WIDTHS, TEACHER_BLOCKS)
    student.train()
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    opt = torch.optim.SGD(student.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM,
                          weight_decay=WEIGHT_DECAY)
    batches = []
    for _ in range(NUM_BATCHES):
        x = torch.randn(a.batch_size, IN_CHANNELS, IMAGE_SIZE, IMAGE_SIZE)
        y = torch.randint(0, NUM_CLASSES, (a.batch_size,))
        batches.append((x, y))

    print(f"torch {torch.__version__}, intra-op threads {torch.get_num_threads()}")
    print(f"teacher parameters={count(teacher)} (widths {','.join(map(str, TEACHER_WIDTHS))}, "
          f"blocks {','.join(map(str, TEACHER_BLOCKS))})")
    print(f"student parameters={count(student)} (widths {','.join(map(str, STUDENT_WIDTHS))}, "
          f"blocks {','.join(map(str, STUDENT_BLOCKS))})")
    sys.stdout.flush()

    step = 0

    def train_step():
        nonlocal step
        x, y = batches[step % len(batches)]
        step += 1
        with torch.no_grad():
            t = teacher(x)
        loss = kd_loss(student(x), t, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    for _ in range(a.warmup):
        train_step()
    rates = []
    loss = None
    for r in range(a.repeats):
        start = time.perf_counter()
        for _ in range(a.steps):
            loss = train_step()
        elapsed = time.perf_counter() - start
        rates.append(a.steps * a.batch_size / elapsed)
        if a.repeats > 1:
            print(f"repeat {r + 1}: {rates[-1]:.1f} samples/s ({elapsed * 1000 / a.steps:.1f} "
                  f"ms/step)")
    print(f"last loss {loss.item():.4f}")
    print(f"pytorch_kd samples_per_second={statistics.median(rates):.1f} threads={a.threads} "
          f"batch={a.batch_size}")


if __name__ == "__main__":
    main()
