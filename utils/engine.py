"""Training and evaluation on device-resident data: a task's images live on the device as one uint8
tensor, batches are index slices, flips and normalisation are batched tensor ops, and the loss and
accuracy are summed on the device so the hot loop never waits for the host."""
import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from utils.splits import MEAN, STD


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
    mean = torch.tensor(MEAN, device=x_uint8.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=x_uint8.device).view(1, 3, 1, 1)
    x = (x_uint8.float() / 255 - mean) / std
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def flip_half(x, generator):
    """Random horizontal flip of each image with probability 1/2 (the released augmentation)."""
    flip = torch.rand(len(x), generator=generator, device=generator.device) < 0.5
    return torch.where(flip.to(x.device).view(-1, 1, 1, 1), x.flip(3), x)


def batch_indices(n, batch_size, generator):
    """A shuffled epoch as a list of index batches."""
    chunks = list(torch.randperm(n, generator=generator, device=generator.device).split(batch_size))
    if len(chunks) > 1 and len(chunks[-1]) == 1:  # BatchNorm cannot train on a batch of one
        chunks = chunks[:-1]
    return chunks


def autocast(device):
    """bf16 mixed precision on CUDA (no loss scaling needed); full precision on CPU, where results must
    be reproducible bit for bit."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_epoch(model, optimizer, data, batch_size, generator, extra_loss=None, after_backward=None):
    """One epoch of SGD over `data`. `extra_loss(model)` adds a penalty (EWC); `after_backward(model)` sees the
    gradients before the step (the learngene criterion). Returns (mean loss, accuracy) as floats."""
    model.train()
    device = data.images.device
    channels_last = device.type == "cuda"
    total_loss = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    for idx in batch_indices(len(data), batch_size, generator):
        idx = idx.to(device)
        x = normalize(flip_half(data.images[idx], generator), channels_last)
        y = data.labels[idx]
        with autocast(device):
            logits = model(x)
            loss = F.cross_entropy(logits.float(), y)
        objective = loss + extra_loss(model) if extra_loss is not None else loss
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
        if after_backward is not None:
            after_backward(model)
        optimizer.step()
        total_loss += loss.detach() * len(idx)
        correct += (logits.argmax(1) == y).sum()
        seen += len(idx)
    return total_loss.item() / max(seen, 1), correct.item() / max(seen, 1)


@torch.no_grad()
def evaluate(model, data, batch_size=256):
    """Accuracy in eval mode (BatchNorm running statistics, no dropout)."""
    model.eval()
    device = data.images.device
    correct = torch.zeros((), device=device, dtype=torch.long)
    for start in range(0, len(data), batch_size):
        x = normalize(data.images[start:start + batch_size], device.type == "cuda")
        with autocast(device):
            correct += (model(x).argmax(1) == data.labels[start:start + batch_size]).sum()
    return correct.item() / max(len(data), 1)


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
