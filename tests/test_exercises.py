"""The lecture's exercise 3 (docs/exercises.md), on small data: pretrain on one corpus, finetune on
another with --init-from, fewer iterations and a lower learning rate, and compare with training the
same model from scratch."""

from __future__ import annotations

import json
import math

from nanogpt_cli import paths

LINES = ["the quick brown fox jumps over the lazy dog.", "to be or not to be, that is the question.",
         "all the world's a stage, and all the men and women merely players."]


def _evals(run: str) -> list[dict]:
    rows = [json.loads(line) for line in (paths.run_dir(run) / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["kind"] == "eval"]


def test_pretrain_then_finetune_starts_from_the_weights_and_keeps_learning(cli, tmp_path, tiny):
    # a "large" corpus and a small target text over the same characters (so the char tokenizers agree)
    (tmp_path / "corpus.txt").write_text("\n".join(LINES[i % 3] for i in range(900)) + "\n")
    # the target: the same words in another order, so what the corpus taught carries over in part
    words = " ".join(LINES).split()
    (tmp_path / "target.txt").write_text("\n".join(" ".join(words[(7 * i + j) % len(words)] for j in range(8))
                                                  for i in range(300)) + "\n")
    assert cli("prepare", tmp_path / "corpus.txt").exit_code == 0
    assert cli("prepare", tmp_path / "target.txt").exit_code == 0

    pretrain = cli("train", "--dataset", "corpus", "--run", "pretrained", *tiny, "--max-iters", "200", "--lr", "1e-2")
    assert pretrain.exit_code == 0, pretrain.output
    finetune = cli("train", "--dataset", "target", "--run", "finetuned", "--init-from", "pretrained", *tiny,
                   "--max-iters", "20", "--lr", "3e-4")
    assert finetune.exit_code == 0, finetune.output
    assert json.loads((paths.run_dir("finetuned") / "config.json").read_text())["init_from"] == "run pretrained"
    assert (
        cli("train", "--dataset", "target", "--run", "scratch", *tiny, "--max-iters", "20", "--lr", "3e-4").exit_code
        == 0
    )

    finetuned, scratch = _evals("finetuned"), _evals("scratch")
    vocab = json.loads((paths.dataset_dir("target") / "meta.json").read_text())["vocab_size"]
    # iteration 0: a fresh model is near ln(vocab); the finetuned one already knows these characters
    assert abs(scratch[0]["val_loss"] - math.log(vocab)) < 0.3
    assert finetuned[0]["val_loss"] < scratch[0]["val_loss"] - 0.5
    # the pretrained model's own loss on the target is where the finetuned run starts
    pretrained_on_target = json.loads(cli("eval", "--run", "pretrained", "--dataset", "target", "--iters", "2",
                                          "--batch-size", "4", "--seed", "1339", "--json").stdout)["loss"]
    assert abs(finetuned[0]["val_loss"] - pretrained_on_target) < 0.3
    # and it keeps learning, ending below the model trained from scratch for as long
    assert finetuned[-1]["val_loss"] < finetuned[0]["val_loss"]
    assert finetuned[-1]["val_loss"] < scratch[-1]["val_loss"]
