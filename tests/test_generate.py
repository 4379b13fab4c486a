"""Sampling: KV cache equal to the plain path (also past the block size), top-k/top-p/greedy, stop
strings, stdin and interactive prompts, JSON output, and UTF-8-safe streaming of BPE tokens."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from nanogpt_cli.config import ModelConfig
from nanogpt_cli.errors import NanoGPTError
from nanogpt_cli.generate import generate_tokens, next_token
from nanogpt_cli.model import GPT


@pytest.fixture
def model(tiny_gpt):
    return tiny_gpt()


def test_cached_logits_equal_full_forward(model):
    idx = torch.randint(0, 40, (1, 12))
    full, _ = model(idx, idx)  # logits for every position
    cache = model.new_cache()
    prefill, _ = model(idx[:, :5], cache=cache)
    assert torch.allclose(prefill[0, -1], full[0, 4], atol=1e-5)
    for t in range(5, 8):
        step, _ = model(idx[:, t : t + 1], cache=cache)
        assert torch.allclose(step[0, -1], full[0, t], atol=1e-5)
    for t in range(8, 12):  # one token at a time, as sampling feeds it, on the same cache
        step, _ = model(idx[:, t : t + 1], cache=cache)
        assert step.shape == (1, 1, 40) and torch.allclose(step[0, -1], full[0, t], atol=1e-5)
    several, _ = model(idx[:, :3], cache=model.new_cache())
    assert cache.length == 12 and several.shape == (1, 1, 40)
    with pytest.raises(AssertionError, match="exceed block_size"):
        cache.length = 16
        model(idx[:, :1], cache=cache)


def test_cached_steps_handle_a_batch_and_biases():
    torch.manual_seed(1)
    model = GPT(ModelConfig(vocab_size=30, block_size=8, n_layer=2, n_head=4, n_embd=32, bias=True)).eval()
    for p in model.parameters():  # biases start at zero; make them count
        torch.nn.init.normal_(p, std=0.1)
    idx = torch.randint(0, 30, (3, 8))
    full, _ = model(idx, idx)
    cache = model.new_cache(batch_size=3)
    model(idx[:, :4], cache=cache)
    for t in range(4, 8):
        assert torch.allclose(model(idx[:, t : t + 1], cache=cache)[0][:, 0], full[:, t], atol=1e-5)


def test_the_cache_holds_tensors_only_and_survives_new_weights(model):
    from nanogpt_cli.model import KVCache

    cache = model.new_cache()
    idx = torch.randint(0, 40, (1, 6))
    model(idx[:, :3], cache=cache)
    model(idx[:, 3:4], cache=cache)
    # Buffers and a length: nothing else (no module, no weight).
    assert set(vars(cache)) == {"layers", "length"} and cache.length == 4
    assert all(isinstance(t, torch.Tensor) for t in cache.layers)
    with torch.no_grad():  # change the weights after the cache was made: it must not hold stale ones
        for p in model.parameters():
            p.mul_(1.5)
    full, _ = model(idx, idx)
    fresh = KVCache(model.config, 1, torch.device("cpu"), torch.float32)
    model(idx[:, :5], cache=fresh)
    step, _ = model(idx[:, 5:6], cache=fresh)
    assert torch.allclose(step[0, -1], full[0, 5], atol=1e-5)


def test_sampling_draws_what_torch_multinomial_draws():
    # next_token samples without torch.multinomial's separate checks; a seed must still give the
    # tokens multinomial would, so seeded samples stay what they were.
    logits = torch.randn(1, 65) * 3
    ours, theirs = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    probs = torch.softmax(logits / 0.8, dim=-1)
    assert [int(next_token(logits, 0.8, generator=ours)) for _ in range(300)] == \
        [int(torch.multinomial(probs, 1, generator=theirs)) for _ in range(300)]
    with pytest.raises(NanoGPTError, match="not finite"):
        next_token(torch.tensor([[0.0, float("nan")]]), 1.0)
    with pytest.raises(NanoGPTError, match="not finite"):
        next_token(torch.tensor([[0.0, float("inf")]]), 1.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_float32_steps_run_without_onednn_and_the_callers_setting_comes_back(model, monkeypatch, dtype):
    # A float32 step runs GELU in PyTorch's own kernel (oneDNN's costs 5x more per token); bfloat16
    # products on a CPU need oneDNN (4x slower without). Between steps, and after, whatever the
    # caller had is in force again.
    model.to(dtype)
    during = []
    forward = model.forward
    monkeypatch.setattr(model, "forward", lambda *args, **kwargs: during.append(torch.backends.mkldnn.enabled)
                        or forward(*args, **kwargs))
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", True)
    between = [torch.backends.mkldnn.enabled for _ in generate_tokens(model, [1, 2], 20)]  # slides at 16
    assert during == [dtype != torch.float32] * 20 and between == [True] * 20 and torch.backends.mkldnn.enabled


@pytest.mark.parametrize("temperature, top_k, top_p", [(0.0, None, None), (1.0, None, None), (0.8, 10, 0.9)])
def test_cache_and_plain_paths_agree_across_window_slides(model, temperature, top_k, top_p):
    prompt = [1, 2, 3, 4, 5]
    runs = []
    for use_cache in (True, False):
        g = torch.Generator().manual_seed(42)
        runs.append(list(generate_tokens(model, prompt, 80, temperature, top_k, top_p, g, use_cache)))
    assert len(runs[0]) == 80  # 5 times the block size of 16: the window slid many times
    assert runs[0] == runs[1]


def test_prompt_longer_than_block_is_cropped(model):
    prompt = list(range(30))
    cached = list(generate_tokens(model, prompt, 10, 0.0))
    assert cached == list(generate_tokens(model, prompt[-16:], 10, 0.0, use_cache=False))


def test_greedy_top_k_one_and_top_p():
    logits = torch.tensor([[1.0, 3.0, 2.0, -1.0]])
    assert int(next_token(logits, 0.0)) == 1
    g = torch.Generator().manual_seed(0)
    assert {int(next_token(logits, 1.0, top_k=1, generator=g)) for _ in range(20)} == {1}
    peaked = torch.tensor([[5.0, 0.0, 0.0, 0.0]])  # token 0 has ~95% of the mass
    assert {int(next_token(peaked, 1.0, top_p=0.5, generator=g)) for _ in range(50)} == {0}
    seen = {int(next_token(peaked, 1.0, top_p=0.99, generator=g)) for _ in range(400)}
    assert len(seen) > 1  # a wide nucleus still samples the tail


def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    g = torch.Generator().manual_seed(0)
    seen = {int(next_token(logits, 1.0, top_p=0.7, generator=g)) for _ in range(300)}
    assert seen == {0, 1}  # 0.5 alone is short of 0.7; 0.5 + 0.3 reaches it


def test_stream_decoder_never_splits_a_utf8_character(gpt2_cache, fresh_tiktoken):
    from nanogpt_cli.generate import StreamDecoder
    from nanogpt_cli.tokenizer import TiktokenTokenizer

    tok = TiktokenTokenizer("gpt2")
    text = "naïve café 🙂 déjà vu — 東京"
    ids = tok.encode(text)
    assert any("\ufffd" in tok.decode([i]) for i in ids)  # some tokens hold part of a character
    decoder = StreamDecoder(tok)
    pieces = [decoder.push(i) for i in ids] + [decoder.flush()]
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)


def test_cli_cache_and_no_cache_give_the_same_text(cli, trained_run):
    args = ["sample", "--prompt", "to be", "--max-new-tokens", "70", "--seed", "11"]
    cached = cli(*args)
    plain = cli(*args, "--no-kv-cache")
    assert cached.exit_code == plain.exit_code == 0
    assert cached.stdout == plain.stdout and len(cached.stdout) == len("to be") + 70 + 1


def test_stop_string_ends_the_sample(cli, trained_run):
    full = cli("sample", "--prompt", "the", "--temperature", "0", "--max-new-tokens", "60").stdout
    continuation = full[len("the"):].rstrip("\n")
    stop = continuation[20:23]
    cut = continuation.index(stop)
    result = cli("sample", "--prompt", "the", "--temperature", "0", "--max-new-tokens", "60", "--stop", stop, "--json")
    data = json.loads(result.stdout)
    assert data["text"] == continuation[:cut] and data["stopped"] is True
    plain = cli(
        "sample", "--prompt", "the", "--temperature", "0", "--max-new-tokens", "60", "--stop", "@@", "--stop", stop
    )
    assert plain.stdout == "the" + continuation[:cut] + "\n"


def test_json_is_one_object_per_sample(cli, trained_run):
    result = cli("sample", "--prompt", "all", "--num-samples", "3", "--max-new-tokens", "12", "--json", "--seed", "1")
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 3
    for row in rows:
        assert row["prompt"] == "all" and len(row["text"]) == 12 and row["tokens"] == 12
        assert row["tokens_per_second"] > 0 and row["time_to_first_token"] >= 0 and row["stopped"] is False
        assert row["run"] == trained_run


def test_prompt_from_stdin(cli, trained_run):
    dash = cli("sample", "--prompt", "-", "--max-new-tokens", "5", input="to be")
    piped = cli("sample", "--max-new-tokens", "5", input="to be")
    assert dash.exit_code == piped.exit_code == 0
    assert dash.stdout.startswith("to be") and piped.stdout.startswith("to be")


def test_stdin_is_a_prompt_only_from_a_pipe_or_a_file_with_text(trained_run, tmp_path):
    """Under cron, nohup or CI stdin is /dev/null or another device: `sample` then starts from its
    default prompt (as with no stdin) instead of continuing "" or reading a device that never ends."""
    def sample(stdin) -> str:
        command = [sys.executable, "-m", "nanogpt_cli", "sample", "--max-new-tokens", "12", "--seed", "4"]
        proc = subprocess.run(command, stdin=stdin, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    default = sample(subprocess.DEVNULL)
    with open("/dev/zero", "rb") as endless:  # a device: never read (it would never end)
        assert sample(endless) == default
    given = tmp_path / "prompt.txt"
    given.write_text("to be")
    with open(given, "rb") as text:
        assert sample(text).startswith("to be")


def test_interactive_answers_each_line_until_eof(cli, trained_run):
    result = cli("sample", "--interactive", "--max-new-tokens", "8", "--seed", "3", input="the quick\nto be\n")
    assert result.exit_code == 0, result.output
    answers = [json.loads(line) for line in cli("sample", "--interactive", "--max-new-tokens", "8", "--seed", "3",
                                                   "--json", input="the quick\nto be\n").stdout.splitlines()]
    assert [a["prompt"] for a in answers] == ["the quick", "to be"]
    assert result.stdout == "".join(a["text"] + "\n" for a in answers)  # only the answers: prompts are not echoed


def test_top_p_flag_is_checked(cli, trained_run):
    result = cli("sample", "--top-p", "1.5")
    assert result.exit_code == 1 and "--top-p must be in (0, 1]" in result.stderr


def test_escapes_in_prompt_and_stop(cli, trained_run):
    args = ["sample", "--prompt", "the\\nto be", "--max-new-tokens", "200", "--temperature", "1", "--seed", "4",
            "--json"]
    free = json.loads(cli(*args).stdout)
    assert free["prompt"] == "the\nto be"  # a real newline
    assert "\n" in free["text"]  # the continuation reaches the end of a line
    stopped = json.loads(cli(*args, "--stop", "\\n").stdout)
    assert stopped["stopped"] and stopped["text"] == free["text"].split("\n")[0]


def test_interactive_asks_again_after_a_prompt_it_cannot_encode(cli, trained_run):
    result = cli("sample", "--interactive", "--max-new-tokens", "8", "--seed", "3", "--json",
                 input="the quick\nthe {fox}\nto be\n")
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["prompt"] for line in result.stdout.splitlines()] == ["the quick", "to be"]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "vocabulary lacks: '{', '}'" in errors[0]
    banner = result.stderr.splitlines()[0]
    assert banner.startswith(f"sampling from run {trained_run} (best.pt): one prompt per line") and "Ctrl-D" in banner


def test_ctrl_c_during_a_reply_stops_only_that_reply(cli, trained_run, monkeypatch):
    from nanogpt_cli.generate import SampleSession

    generate = SampleSession.generate
    calls = []

    def interrupted_once(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return generate(self, *args, **kwargs)

    monkeypatch.setattr(SampleSession, "generate", interrupted_once)
    result = cli("sample", "--interactive", "--max-new-tokens", "8", "--json", input="the quick\nto be\n")
    assert result.exit_code == 0, result.output
    assert "(reply stopped)" in result.stderr
    assert [json.loads(line)["prompt"] for line in result.stdout.splitlines() if line.startswith("{")] == ["to be"]


def test_interactive_on_a_terminal_edits_lines_and_ends_on_ctrl_d(home, trained_run):
    """In a real pseudo-terminal: arrow keys edit the line (readline), and Ctrl-D quits with exit 0."""
    import os
    import pty
    import select
    import subprocess
    import sys
    import time

    main, child = pty.openpty()
    env = {**os.environ, "NANOGPT_HOME": str(home), "TERM": "xterm"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "nanogpt_cli", "sample", "-i", "--max-new-tokens", "5", "--seed", "1"],
        stdin=child,
        stdout=child,
        stderr=child,
        env=env,
        close_fds=True,
    )
    os.close(child)
    output = b""

    def wait_for_prompts(count: int, timeout: float = 60) -> None:
        nonlocal output
        deadline = time.time() + timeout
        while output.count(b"> ") < count and time.time() < deadline:
            if select.select([main], [], [], 0.1)[0]:
                try:
                    output += os.read(main, 4096)
                except OSError:  # the child closed the terminal
                    return

    wait_for_prompts(1)
    os.write(main, b"the\x1b[D\x1b[Dx\r")  # "the", two left arrows, "x": the line reads "txhe"
    wait_for_prompts(2)
    os.write(main, b"\x04")  # Ctrl-D at an empty prompt
    assert proc.wait(timeout=60) == 0, output.decode(errors="replace")
    os.close(main)
    text = output.decode(errors="replace")
    assert text.count("> ") == 2  # one answer, then the next prompt
    assert "vocabulary lacks" not in text and "Traceback" not in text
