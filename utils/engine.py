"""Training and evaluation on device-resident data: a task's images live on the device as one uint8
tensor, batches are index slices, flips and normalisation are batched tensor ops, and the loss and
accuracy are summed on the device so the hot loop never waits for the host."""
import contextlib
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ImageNet statistics, as the released scripts


@dataclass
class DeviceData:
    images: torch.Tensor   # uint8 [N, 3, H, W] on the device
    labels: torch.Tensor   # int64 [N] on the device

    @classmethod
    def from_numpy(cls, images, labels, device):
        x = torch.from_numpy(images).to(device).permute(0, 3, 1, 2).contiguous()
        return cls(x, torch.from_numpy(labels).to(device))

    def __len__(self):
        return len(self.labels)


def normalize(x_uint8, channels_last=False):
    # the default dtype, not float32: the tests run whole trainings in float64 to compare paths exactly
    dtype = torch.get_default_dtype()
    mean = torch.tensor(MEAN, device=x_uint8.device, dtype=dtype).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=x_uint8.device, dtype=dtype).view(1, 3, 1, 1)
    x = (x_uint8.to(dtype) / 255 - mean) / std
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def flip_half(x, generator):
    """Random horizontal flip of each image with probability 1/2 (the released augmentation)."""
    flip = torch.rand(len(x), generator=generator, device=generator.device) < 0.5
    return torch.where(flip.to(x.device).view(-1, 1, 1, 1), x.flip(3), x)


def batch_indices(n, batch_size, generator):
    """A shuffled epoch as ceil(n / batch_size) index batches of equal size (+-1), none larger than batch_size.
    Not the released DataLoader's full batches and a remainder: 20 shots x 5 classes at batch 32 gave batches of
    32, 32, 32 and 4, and the BatchNorm statistics of that last batch of 4 (the last update of the running
    statistics before each evaluation) cost the 20-shot models about 10 points of test accuracy and doubled
    their run-to-run spread (README, cpu preset results); 25, 25, 25, 25 has neither problem."""
    perm = torch.randperm(n, generator=generator, device=generator.device)
    return list(perm.tensor_split(max(1, -(-n // batch_size))))


PRECISIONS = ("auto", "fp32", "bf16")


def cpu_supports_bf16():
    """Whether this CPU has native bf16 arithmetic (AVX-512 BF16 or AMX), where bf16 autocast pays (measured
    1.6-1.9x fp32 here, bench/RESULTS.md); elsewhere it is emulated and slower than fp32."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def resolve_precision(precision, device):
    """'auto' -> 'bf16' where the device computes in bf16 natively (CUDA with bf16, or such a CPU), else 'fp32'."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_supports_bf16() else "fp32"


def autocast(device, precision):
    """bf16 mixed precision (weights, gradients and the loss stay fp32; no loss scaling needed), or nothing."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def uses_channels_last(device, precision):
    """NHWC activations: what cuDNN's and oneDNN's fast bf16 convolutions want; plain NCHW for fp32 on a CPU."""
    return device.type == "cuda" or precision == "bf16"


def full_precision(logits):
    """Logits for the loss: bf16/fp16 from autocast are upcast; float32 and float64 stay as they are."""
    return logits.float() if logits.dtype in (torch.bfloat16, torch.float16) else logits


@dataclass
class EpochStats:
    loss: float      # mean cross-entropy over the epoch's images
    penalty: float   # mean extra loss (EWC) over the epoch's batches; 0 without one
    accuracy: float  # training accuracy, on the augmented batches

    @property
    def finite(self):
        """False once training diverged: a non-finite loss or penalty."""
        return math.isfinite(self.loss) and math.isfinite(self.penalty)


def train_epoch(model, optimizer, data, batch_size, generator, extra_loss=None, after_backward=None,
                precision="fp32", channels_last=None):
    """One epoch of SGD over `data`. `extra_loss(model)` adds a penalty (EWC); `after_backward(model)` sees the
    gradients before the step (the learngene criterion); precision: 'fp32' or 'bf16' (resolved, not 'auto');
    channels_last: the batches' memory format (default: what the precision wants on this device, as the model's).
    Returns its EpochStats."""
    model.train()
    device = data.images.device
    if channels_last is None:
        channels_last = uses_channels_last(device, precision)
    total_loss = torch.zeros((), device=device)
    total_penalty = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = steps = 0
    for idx in batch_indices(len(data), batch_size, generator):
        idx = idx.to(device)
        x = normalize(flip_half(data.images[idx], generator), channels_last)
        y = data.labels[idx]
        with autocast(device, precision):
            logits = model(x)
            loss = F.cross_entropy(full_precision(logits), y)
        objective = loss
        if extra_loss is not None:
            penalty = extra_loss(model)
            objective = loss + penalty
            total_penalty += penalty.detach()
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
        if after_backward is not None:
            after_backward(model)
        optimizer.step()
        total_loss += loss.detach() * len(idx)
        correct += (logits.argmax(1) == y).sum()
        seen += len(idx)
        steps += 1
    return EpochStats(total_loss.item() / max(seen, 1), total_penalty.item() / max(steps, 1),
                      correct.item() / max(seen, 1))


@torch.no_grad()
def evaluate(model, data, precision="fp32", batch_size=256, by_class=False):
    """Accuracy in eval mode (BatchNorm running statistics, no dropout); with `by_class`, (accuracy, [accuracy on
    the images of label 0, 1, ... up to the model's last output], as class_accuracy), the same pass."""
    model.eval()
    device = data.images.device
    hits, n_classes = [], 0
    for start in range(0, len(data), batch_size):
        x = normalize(data.images[start:start + batch_size], uses_channels_last(device, precision))
        with autocast(device, precision):
            logits = model(x)
        hits.append(logits.argmax(1) == data.labels[start:start + batch_size])
        n_classes = logits.shape[-1]
    hits = torch.cat(hits) if hits else torch.zeros(0, dtype=torch.bool, device=device)
    accuracy = hits.sum().item() / max(len(data), 1)
    return (accuracy, class_accuracy(hits, data.labels, n_classes)) if by_class else accuracy


def class_accuracy(hits, labels, n_classes):
    """[accuracy on the images of label 0, 1, ..., n_classes - 1] from each image's hit (a bool tensor) and label;
    None for a class with no test image (its accuracy is unknown, not 0)."""
    correct = torch.bincount(labels[hits], minlength=n_classes)[:n_classes].tolist()
    total = torch.bincount(labels, minlength=n_classes)[:n_classes].tolist()
    return [c / t if t else None for c, t in zip(correct, total)]


def synchronize(device):
    """Wait for the device's queued work (timing); a no-op on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def sgd(model, lr, momentum, weight_decay):
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)


def seeded_generator(seed, device):
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g
