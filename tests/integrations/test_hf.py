"""SparseTrainer, the optimizer recipe and SparsityTrainerCallback on a tiny BERT built from a config."""

from __future__ import annotations

import copy
import json

import pytest
import torch

transformers = pytest.importorskip(
    "transformers", reason='Hugging Face transformers is not installed: pip install "sparseopt[hf]"'
)
pytest.importorskip("accelerate", reason='accelerate is not installed: pip install "sparseopt[hf]"')

from sparseopt.integrations._common import find_sparse_optimizer  # noqa: E402
from sparseopt.integrations.hf import (  # noqa: E402
    SparseTrainer,
    SparsityTrainerCallback,
    sparse_optimizer_cls_and_kwargs,
)
from sparseopt.path import load_path  # noqa: E402


class _Tokens(torch.utils.data.Dataset):
    """Random token sequences; the label says whether token 3 occurs."""

    def __init__(self, n: int, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(4, 30, (n, 12), generator=gen)
        self.ids[: n // 2, 5] = 3
        self.labels = (self.ids == 3).any(1).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def _model() -> torch.nn.Module:
    config = transformers.BertConfig(
        vocab_size=32,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        num_labels=2,
    )
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(config)


def _args(out, **kw) -> transformers.TrainingArguments:
    base = {
        "output_dir": str(out),
        "max_steps": 6,
        "per_device_train_batch_size": 8,
        "per_device_eval_batch_size": 16,
        "eval_strategy": "steps",
        "eval_steps": 3,
        "save_strategy": "steps",
        "save_steps": 3,
        "logging_steps": 1,
        "learning_rate": 0.05,
        "weight_decay": 0.01,
        "lr_scheduler_type": "linear",
        "report_to": [],
        "use_cpu": True,
        "disable_tqdm": True,
        "seed": 0,
    }
    return transformers.TrainingArguments(**{**base, **kw})


def _eval_loss(model: torch.nn.Module) -> float:
    data = _Tokens(16, 1)
    model.eval()
    with torch.no_grad():
        return model(input_ids=data.ids, labels=data.labels).loss.item()


class _Grab(transformers.TrainerCallback):
    def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
        self.state = copy.deepcopy(find_sparse_optimizer(optimizer).state_dict())


def test_sparse_trainer_creates_logs_evaluates_deployed_and_resumes(tmp_path) -> None:
    kw = {"sparse_optimizer": "rvsm", "sparse_kwargs": {"lam": 2e-3, "beta": 1.0}}
    model = _model()
    trainer = SparseTrainer(
        model=model,
        args=_args(tmp_path / "a"),
        train_dataset=_Tokens(48, 0),
        eval_dataset=_Tokens(16, 1),
        sparsity_callback=SparsityTrainerCallback(finalize=False),
        **kw,
    )
    trainer.train()
    opt = find_sparse_optimizer(trainer.optimizer)
    assert type(opt).__name__ == "RVSM" and opt is not trainer.optimizer  # made by the Trainer
    groups = {g["name"]: g for g in opt.param_groups}
    unpenalised = groups["unpenalised"]["param_names"]
    assert "bert.embeddings.word_embeddings.weight" in unpenalised
    assert "bert.embeddings.LayerNorm.weight" in unpenalised
    assert "classifier.weight" in groups["linear"]["param_names"]
    assert groups["linear"]["weight_decay"] == 0.01 and groups["unpenalised"]["weight_decay"] == 0
    # densities in the logs (train and eval entries)
    history = trainer.state.log_history
    logged = [h for h in history if "loss" in h]
    assert len(logged) == 6 and all("weight_density" in h and "lam" in h for h in logged)
    assert "layer_density/classifier" in logged[-1]
    # every penalised Linear layer's λ, named as its density (one group: one λ, held)
    last = logged[-1]
    lams = {k.removeprefix("layer_lam/") for k in last if k.startswith("layer_lam/")}
    assert lams == {k.removeprefix("layer_density/") for k in last if "layer_density/" in k}
    assert {last[f"layer_lam/{n}"] for n in lams} == {groups["linear"]["lam"]}
    # the evaluation at step 6 ran on the deployable network (u, not w)
    eval_loss = [h["eval_loss"] for h in history if "eval_loss" in h][-1]
    with opt.deployed():
        assert eval_loss == pytest.approx(_eval_loss(model), rel=1e-5)
    assert eval_loss != pytest.approx(_eval_loss(model), rel=1e-5)
    assert trainer.evaluate()["eval_loss"] == pytest.approx(eval_loss, rel=1e-5)
    # the path: start + one point per evaluation
    assert [p["step"] for p in load_path(tmp_path / "a").points] == [0, 3, 6]

    # save_model writes the weights; a resumed run restores the optimizer state exactly
    trainer.save_model(str(tmp_path / "final"))
    again = transformers.BertForSequenceClassification.from_pretrained(str(tmp_path / "final"))
    for (name, p), q in zip(model.named_parameters(), again.parameters(), strict=True):
        torch.testing.assert_close(p, q, msg=name)
    ckpt = tmp_path / "a" / "checkpoint-3"
    saved = torch.load(ckpt / "optimizer.pt", weights_only=True)
    grab = _Grab()
    resumed_model = _model()
    resumed = SparseTrainer(
        model=resumed_model,
        args=_args(tmp_path / "a"),
        train_dataset=_Tokens(48, 0),
        eval_dataset=_Tokens(16, 1),
        callbacks=[grab],
        sparsity_callback=SparsityTrainerCallback(finalize=False),
        **kw,
    )
    resumed.train(resume_from_checkpoint=str(ckpt))
    assert grab.state["param_groups"] == saved["param_groups"]
    for i, s in saved["state"].items():
        for k, v in s.items():
            torch.testing.assert_close(grab.state["state"][i][k], v, rtol=0, atol=0)
    # same data order after resuming: the same final network
    for p, q in zip(model.parameters(), resumed_model.parameters(), strict=True):
        torch.testing.assert_close(p, q)
    assert [p["step"] for p in load_path(tmp_path / "a").points] == [0, 3, 6]


def test_plain_trainer_with_the_recipe_and_the_callback(tmp_path) -> None:
    model = _model()
    trainer = transformers.Trainer(
        model=model,
        args=_args(tmp_path, max_steps=4, eval_steps=2, save_strategy="no"),
        train_dataset=_Tokens(48, 0),
        eval_dataset=_Tokens(16, 1),
        optimizer_cls_and_kwargs=sparse_optimizer_cls_and_kwargs(
            "rvsm", lr=0.05, lam=2e-3, weight_decay=0.01
        ),
        callbacks=[SparsityTrainerCallback(target_density=0.5, control_every_n_steps=2)],
    )
    trainer.train()
    opt = find_sparse_optimizer(trainer.optimizer)
    assert type(opt).__name__ == "RVSM"
    assert any("weight_density" in h for h in trainer.state.log_history)
    assert opt.param_groups[0]["lam"] != 2e-3  # the controller acted
    # finalize (default): the parameters are the deployable network, which was evaluated
    for p in model.parameters():
        torch.testing.assert_close(p, opt.deployable(p))
    eval_loss = [h["eval_loss"] for h in trainer.state.log_history if "eval_loss" in h][-1]
    assert eval_loss == pytest.approx(_eval_loss(model), rel=1e-5)


def test_the_callback_refuses_a_dense_optimizer(tmp_path) -> None:
    trainer = transformers.Trainer(
        model=_model(),
        args=_args(tmp_path, max_steps=1, eval_strategy="no", save_strategy="no"),
        train_dataset=_Tokens(8, 0),
        callbacks=[SparsityTrainerCallback()],
    )
    with pytest.raises(TypeError, match="needs a sparseopt optimizer"):
        trainer.train()


def test_the_controller_state_is_saved_and_resumed(tmp_path) -> None:
    """The controller's state travels in the checkpoint (``stateful_callbacks``): a run
    resumed from step 3 steers λ as the uninterrupted run did (RVSM's preset ramp)."""
    kw = {"sparse_optimizer": "rvsm", "sparse_kwargs": {"lam": 2e-3, "beta": 1.0}}

    def run(out, resume=None):
        cb = SparsityTrainerCallback(target_density=0.5, control_every_n_steps=1)
        trainer = SparseTrainer(
            model=_model(),
            args=_args(out),
            train_dataset=_Tokens(48, 0),
            eval_dataset=_Tokens(16, 1),
            sparsity_callback=cb,
            **kw,
        )
        trainer.train(resume_from_checkpoint=resume)
        return cb, find_sparse_optimizer(trainer.optimizer)

    full, opt = run(tmp_path / "a")
    assert full.controller.total_steps == 6 and full.controller.ramp == 0.8  # the run's steps
    saved = json.loads((tmp_path / "a" / "checkpoint-3" / "trainer_state.json").read_text())
    kept = saved["stateful_callbacks"]["SparsityTrainerCallback"]["attributes"]
    assert kept["_controller_state"]["updates"] == 3
    resumed, opt2 = run(tmp_path / "a", resume=str(tmp_path / "a" / "checkpoint-3"))
    assert resumed.controller.state_dict() == full.controller.state_dict()
    assert opt2.param_groups[0]["lam"] == pytest.approx(opt.param_groups[0]["lam"], rel=1e-6)


def test_a_target_density_gives_the_optimizer_the_controllers_start(tmp_path) -> None:
    """With a target density the SparseTrainer builds its optimizer steered: an unset λ
    takes the recipe's controller start (ProxSGD's ℓ0: 2.5e-7, not its fixed 0.025);
    without one, the fixed λ; a λ given wins."""
    cases = ((0.2, {}, 2.5e-7), (None, {}, 0.025), (0.2, {"lam": 1e-3}, 1e-3))
    for target, extra, lam in cases:
        trainer = SparseTrainer(
            model=_model(),
            args=_args(tmp_path / f"t{target}{extra}", eval_strategy="no", save_strategy="no"),
            train_dataset=_Tokens(8, 0),
            sparse_optimizer="proxsgd",
            sparse_kwargs={"penalty": "l0", **extra},
            sparsity_callback=SparsityTrainerCallback(target_density=target),
        )
        opt = find_sparse_optimizer(trainer.create_optimizer())
        assert {g["lam"] for g in opt.param_groups if g["penalty"] != "none"} == {lam}


def test_a_gpt2_has_its_conv1d_weights_penalised_and_counted(tmp_path) -> None:
    """GPT-2's projections are Hugging Face ``Conv1D`` layers, not ``nn.Linear``: they
    are penalised and counted (by output units) all the same; before 2026-11-29 a GPT-2
    got no penalised weight and a weight density of 0 of 0."""
    config = transformers.GPT2Config(
        vocab_size=32, n_embd=16, n_layer=1, n_head=2, n_positions=16, num_labels=2,
        pad_token_id=0, bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.GPT2ForSequenceClassification(config)
    trainer = SparseTrainer(
        model=model,
        args=_args(tmp_path, max_steps=4, eval_steps=2, save_strategy="no"),
        train_dataset=_Tokens(48, 0),
        eval_dataset=_Tokens(16, 1),
        sparse_optimizer="proxsgd",
        sparse_kwargs={"lam": 0.05},
        sparsity_callback=SparsityTrainerCallback(finalize=False),
    )
    trainer.train()
    opt = find_sparse_optimizer(trainer.optimizer)
    penalised = {n for g in opt.param_groups if g["penalty"] != "none" for n in g["param_names"]}
    assert {
        "transformer.h.0.attn.c_attn.weight",
        "transformer.h.0.attn.c_proj.weight",
        "transformer.h.0.mlp.c_fc.weight",
        "transformer.h.0.mlp.c_proj.weight",
        "score.weight",
    } == penalised
    last = [h for h in trainer.state.log_history if "weight_density" in h][-1]
    assert 0 < last["weight_density"] < 1
    assert 0 <= last["layer_density/transformer.h.0.attn.c_attn"] < 1
