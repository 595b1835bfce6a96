"""Train a sparse BERT classifier with the Hugging Face Trainer and sparseopt.

Nothing is downloaded: the model is a small ``BertForSequenceClassification`` built from
a config, the data synthetic token sequences whose label says whether a "keyword"
token occurs. :class:`~sparseopt.integrations.hf.SparseTrainer` creates the sparseopt
optimizer itself (param groups from ``sparseopt.param_groups``: the Linear weights
penalised; embeddings, LayerNorms and biases not), evaluates the deployable network,
logs the densities with the loss (and to TensorBoard & co. with ``report_to``), records
the solution path in ``output_dir`` and steers λ to a target density.

    pip install "sparseopt[hf]"
    python examples/hf_sparse_trainer.py            # about a minute on a laptop CPU
    python examples/hf_sparse_trainer.py --smoke    # a few seconds (what the tests run)
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import numpy as np
import torch
from transformers import BertConfig, BertForSequenceClassification, TrainingArguments

import sparseopt as so
from sparseopt.integrations.hf import SparseTrainer, SparsityTrainerCallback

KEYWORD = 3


class KeywordData(torch.utils.data.Dataset):
    """Random token sequences; label 1 when the keyword token occurs."""

    def __init__(self, n: int, *, length: int = 16, vocab: int = 64, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(KEYWORD + 1, vocab, (n, length), generator=gen)
        has = torch.rand(n, generator=gen) < 0.5
        where = torch.randint(1, length, (n,), generator=gen)
        self.ids[has, where[has]] = KEYWORD
        self.ids[:, 0] = 2  # a [CLS]-like first token
        self.labels = has.long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def accuracy(pred) -> dict[str, float]:
    return {"acc": float((np.argmax(pred.predictions, -1) == pred.label_ids).mean())}


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--optimizer", default="adabreg", choices=so.list_optimizers(sparse_only=True)
    )
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--target-density", type=float, default=0.3)
    parser.add_argument("--out", default="runs/hf")
    parser.add_argument("--smoke", action="store_true", help="a few tiny steps (for tests)")
    args = parser.parse_args(argv)

    config = BertConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
        num_labels=2,
    )
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    so.sparse_init_(model, density=0.05)  # Linear layers start sparse; the support grows
    n_train = 64 if args.smoke else 2048
    training = TrainingArguments(
        output_dir=args.out,
        num_train_epochs=1 if args.smoke else args.epochs,
        max_steps=4 if args.smoke else -1,
        per_device_train_batch_size=32,
        per_device_eval_batch_size=256,
        learning_rate=2e-3,
        weight_decay=0.01,  # on the penalised (Linear) weights only, decoupled
        lr_scheduler_type="cosine",
        eval_strategy="epoch",
        save_strategy="no",
        logging_steps=2 if args.smoke else 20,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    trainer = SparseTrainer(
        model=model,
        args=training,
        train_dataset=KeywordData(n_train, seed=0),
        eval_dataset=KeywordData(64 if args.smoke else 512, seed=1),
        compute_metrics=accuracy,
        sparse_optimizer=args.optimizer,
        sparsity_callback=SparsityTrainerCallback(
            target_density=args.target_density, control_every_n_steps=2
        ),
    )
    trainer.train()
    metrics = trainer.evaluate()  # on the deployable network (finalized now)
    rep = so.density(model)
    print(
        f"{args.optimizer}: eval acc {metrics['eval_acc']:.3f}, weight density "
        f"{rep.weight_density:.1%} (all parameters {rep.overall:.1%}); path in {args.out}"
    )
    return {"eval_acc": metrics["eval_acc"], "weight_density": rep.weight_density}


if __name__ == "__main__":
    main()
