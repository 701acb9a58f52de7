"""The seq2seq task: teacher forcing and label smoothing against plain PyTorch; BLEU/chrF against sacrebleu."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ember import tasks
from ember.data.tokenizers import CharTokenizer
from ember.tasks.seq2seq import IGNORE_INDEX, Seq2Seq, Seq2SeqOutput

PAD, BOS, EOS = 0, 2, 3


class Recorder(nn.Module):
    """Returns fixed random logits and remembers what it was fed."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab
        self.seen: tuple[torch.Tensor, ...] = ()

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        self.seen = (src, tgt_in, src_mask)
        return torch.randn(*tgt_in.shape, self.vocab, generator=torch.Generator().manual_seed(0))


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    src = torch.tensor([[5, 6, 7, EOS], [8, EOS, PAD, PAD]])
    tgt = torch.tensor([[BOS, 9, 10, 11, EOS], [BOS, 12, EOS, PAD, PAD]])
    return src, tgt


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_label_smoothed_loss_matches_torch(smoothing: float) -> None:
    task = tasks.create("seq2seq", label_smoothing=smoothing)
    model = Recorder(vocab=16)
    logits, target = task.forward(model, batch())
    src, tgt_in, src_mask = model.seen
    # teacher forcing: the model reads <bos> + target, and is scored on target + <eos>
    assert tgt_in.tolist() == [[BOS, 9, 10, 11], [BOS, 12, EOS, PAD]]
    assert target.tolist() == [[9, 10, 11, EOS], [12, EOS, IGNORE_INDEX, IGNORE_INDEX]]
    assert src_mask.tolist() == [[True] * 4, [True, True, False, False]]
    loss = task.loss(logits, target)
    # the reference: PyTorch's own smoothing over the 6 real target tokens
    real = target != IGNORE_INDEX
    reference = F.cross_entropy(logits[real], target[real], label_smoothing=smoothing)
    torch.testing.assert_close(loss, reference)
    # and the formula written out: (1 - e) * NLL + e * mean over the vocabulary of -log p
    logp = logits[real].log_softmax(-1)
    nll = -logp.gather(1, target[real][:, None]).squeeze(1)
    by_hand = ((1 - smoothing) * nll + smoothing * -logp.mean(-1)).mean()
    torch.testing.assert_close(loss, by_hand)


def test_padding_does_not_change_the_loss() -> None:
    task = Seq2Seq(label_smoothing=0.1)
    logits = torch.randn(1, 4, 16)
    target = torch.tensor([[9, 10, EOS, IGNORE_INDEX]])
    padded = task.loss(logits, target)
    trimmed = task.loss(logits[:, :3], target[:, :3])
    torch.testing.assert_close(padded, trimmed)


def test_evaluation_scores_decoded_text_with_sacrebleu() -> None:
    sacrebleu = pytest.importorskip("sacrebleu")
    tok = CharTokenizer.train(["the cat sat on a mat"])
    task = Seq2Seq(tokenizer=tok)
    refs, hyps = ["the cat sat on the mat", "a cat"], ["the cat sat on a mat", "a cat"]
    target = torch.full((2, 24), IGNORE_INDEX)
    decoded = torch.full((2, 24), tok.pad_id)
    for i, (ref, hyp) in enumerate(zip(refs, hyps)):
        ids = tok.encode(ref) + [tok.eos_id]
        target[i, : len(ids)] = torch.tensor(ids)
        ids = tok.encode(hyp) + [tok.eos_id]
        decoded[i, : len(ids)] = torch.tensor(ids)
    ev = task.evaluation()
    logits = torch.zeros(2, 24, tok.vocab_size)
    ev.update(Seq2SeqOutput(logits, decoded), target, task.loss(logits, target))
    metrics = ev.compute()
    assert metrics["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert metrics["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)
    assert metrics["decoded"] == 2 and 0 < metrics["bleu"] < 100
    assert metrics["loss"] == pytest.approx(float(torch.log(torch.tensor(float(tok.vocab_size)))))


def test_validation_decodes_a_spread_subset_and_test_decodes_all() -> None:
    task = Seq2Seq(val_decode_fraction=0.25, beam_size=5, val_beam_size=1)
    assert [task._decode_batch(i) for i in range(8)] == [True, False, False, False, True, False, False, False]
    final = task.for_test()
    assert final.decoding.beam_size == 5 and final.decoding.fraction == 1.0
    assert task.decoding.beam_size == 1  # the training task is unchanged
    assert all(final._decode_batch(i) for i in range(8))
    assert not any(Seq2Seq(val_decode_fraction=0.0)._decode_batch(i) for i in range(8))


def test_eval_forward_returns_translations() -> None:
    from ember.models import create

    torch.manual_seed(0)
    model = create("encoder_decoder_tiny", vocab_size=16, max_len=16).eval()
    task = Seq2Seq(beam_size=2)
    final = task.for_test()
    ev = final.evaluation()
    output, target = final.forward(model, batch())
    assert isinstance(output, Seq2SeqOutput) and output.hypotheses is not None
    assert output.hypotheses.shape[0] == 2 and BOS not in output.hypotheses.tolist()[0]
    ev.update(output, target, final.loss(output, target))
    assert {"loss", "perplexity", "bleu", "chrf"} <= set(ev.compute())
