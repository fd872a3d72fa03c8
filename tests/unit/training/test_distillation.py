"""The knowledge distillation loss (llmops/training/train.py `distillation_loss`) as a pure function of
[batch, seq, vocab] logits and labels: its two terms, their weights, the T^2 factor and the label mask."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from llmops.training.train import _token_loss, distillation_loss  # noqa: E402

BATCH, SEQ, VOCAB = 3, 7, 11


def logits(seed: int, scale: float = 1.0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(BATCH, SEQ, VOCAB, generator=generator) * scale


def labels(seed: int = 0, masked: tuple[tuple[int, int], ...] = ()):
    generator = torch.Generator().manual_seed(seed)
    out = torch.randint(0, VOCAB, (BATCH, SEQ), generator=generator)
    for row, col in masked:
        out[row, col] = -100
    return out


def reference_kl(student, teacher, y, temperature: float) -> float:
    """Mean over counted positions of sum_v p_t(v) (log p_t(v) - log p_s(v)), written out by hand."""
    total, count = 0.0, 0
    for b in range(student.shape[0]):
        for t in range(student.shape[1] - 1):
            if y[b, t + 1] == -100:
                continue
            p_t = torch.softmax(teacher[b, t].double() / temperature, -1)
            log_p_s = torch.log_softmax(student[b, t].double() / temperature, -1)
            total += float((p_t * (p_t.log() - log_p_s)).sum())
            count += 1
    return total / count


def test_terms_weights_and_temperature_squared():
    student, teacher, y = logits(1), logits(2, 3.0), labels(masked=((0, 3), (2, 1), (2, 6)))
    for temperature in (0.5, 1.0, 2.0, 4.0):
        for alpha in (0.0, 0.3, 1.0):
            loss, kl, ce = distillation_loss(student, teacher, y, temperature, alpha)
            assert float(kl) == pytest.approx(reference_kl(student, teacher, y, temperature), rel=1e-5)
            assert float(ce) == pytest.approx(float(_token_loss(student, y, 0.0)), rel=1e-6)
            expected = alpha * temperature**2 * float(kl) + (1 - alpha) * float(ce)
            assert float(loss) == pytest.approx(expected, rel=1e-6)
    print(f"KL at T=2: {float(distillation_loss(student, teacher, y, 2.0, 0.5)[1]):.5f} nats per token")


def test_alpha_zero_is_the_plain_cross_entropy_with_its_gradient():
    y = labels(masked=((1, 2),))
    for smoothing in (0.0, 0.1):
        a = logits(3).requires_grad_()
        b = a.detach().clone().requires_grad_()
        loss, _, _ = distillation_loss(a, logits(4), y, 2.0, 0.0, smoothing)
        plain = _token_loss(b, y, smoothing)
        assert loss.item() == pytest.approx(plain.item(), rel=1e-6)
        loss.backward()
        plain.backward()
        assert torch.allclose(a.grad, b.grad, atol=1e-7)


def test_identical_logits_give_kl_zero():
    same = logits(5, 2.0)
    loss, kl, _ = distillation_loss(same, same.clone(), labels(), 3.0, 1.0)
    assert abs(float(kl)) < 1e-6 and abs(float(loss)) < 1e-5
    # ... and a student anywhere else is further away.
    assert float(distillation_loss(logits(6), same, labels(), 3.0, 1.0)[1]) > 0.1


def test_only_counted_positions_matter():
    """A position whose next label is -100 (padding, a prompt token of a chat) adds nothing to either term,
    and the student gets no gradient there."""
    y = labels(masked=((0, 4), (1, 1)))  # positions (0, 3) and (1, 0) predict masked tokens
    student, teacher = logits(7).requires_grad_(), logits(8)
    loss, _, _ = distillation_loss(student, teacher, y, 2.0, 0.5)
    loss.backward()
    assert float(student.grad[0, 3].abs().sum()) == 0 and float(student.grad[1, 0].abs().sum()) == 0
    assert float(student.grad[:, -1].abs().sum()) == 0  # the last position predicts nothing
    changed_teacher, changed_student = teacher.clone(), student.detach().clone()
    changed_teacher[0, 3] += 50.0
    changed_student[1, 0] -= 50.0
    again = distillation_loss(changed_student, changed_teacher, y, 2.0, 0.5)
    assert again[0].item() == pytest.approx(loss.item(), rel=1e-6)
    # Nothing counted (a block of chat prompts only): zero, with a zero gradient.
    none = torch.full((BATCH, SEQ), -100)
    student = logits(9).requires_grad_()
    zero, kl0, ce0 = distillation_loss(student, teacher, none, 2.0, 0.5)
    zero.backward()
    assert zero.item() == kl0.item() == ce0.item() == 0 and float(student.grad.abs().sum()) == 0


def test_teacher_gets_no_gradient_and_student_is_pulled_toward_it():
    student = logits(10).requires_grad_()
    teacher = logits(11, 2.0).requires_grad_()
    loss, kl, _ = distillation_loss(student, teacher, labels(), 2.0, 1.0)
    loss.backward()
    assert teacher.grad is None
    stepped = (student - 0.5 * student.grad).detach()
    assert distillation_loss(stepped, teacher, labels(), 2.0, 1.0)[1].item() < kl.item()


def test_temperature_squared_keeps_the_gradient_scale():
    """Hinton et al. 2015, section 2: at high T the soft term's gradient falls as 1/T^2, so T^2 * KL keeps
    it steady; the gradient of the bare KL would shrink a hundredfold from T=1 to T=10."""
    student, teacher, y = logits(12, 0.5), logits(13, 0.5), labels()

    def grad_norm(temperature: float, scaled: bool) -> float:
        s = student.clone().requires_grad_()
        loss, kl, _ = distillation_loss(s, teacher, y, temperature, 1.0)
        (loss if scaled else kl).backward()
        return float(s.grad.norm())

    with_t2 = [grad_norm(t, True) for t in (5.0, 10.0, 20.0)]
    bare = [grad_norm(t, False) for t in (5.0, 10.0, 20.0)]
    print(f"gradient norm with T^2 at T=5,10,20: {with_t2}; without: {bare}")
    assert max(with_t2) / min(with_t2) < 1.1
    assert bare[0] / bare[2] == pytest.approx(16, rel=0.1)


def test_vocabularies_of_other_sizes_compare_the_shared_ids():
    """An embedding matrix padded past the tokenizer (more logits than tokens): the KL covers the ids
    both models have."""
    student, teacher, y = logits(14), logits(15), labels()
    padded = torch.cat([teacher, torch.full((BATCH, SEQ, 5), -1e4)], dim=-1)
    assert float(distillation_loss(student, padded, y, 2.0, 1.0)[1]) == pytest.approx(
        float(distillation_loss(student, teacher, y, 2.0, 1.0)[1]), rel=1e-6
    )


def test_bad_settings_are_refused():
    for temperature, alpha in ((0.0, 0.5), (-1.0, 0.5), (1.0, 1.5), (1.0, -0.1)):
        with pytest.raises(ValueError, match="temperature must be > 0 and alpha in"):
            distillation_loss(logits(1), logits(2), labels(), temperature, alpha)
    assert math.isfinite(float(distillation_loss(logits(1), logits(2) * 1e3, labels(), 0.1, 0.5)[0]))


@pytest.mark.parametrize("chunk_rows", [1, 2, 4, 100])
def test_the_kl_taken_in_chunks_equals_the_whole_batch_in_value_and_gradient(chunk_rows: int):
    """The KL is summed chunk by chunk (checkpointed) so a large vocabulary never holds a whole batch's
    softmaxes: any chunking gives the value and the student's gradient of the whole-batch formula."""
    import torch.nn.functional as F

    y = labels(3, masked=((0, 1), (1, 2), (1, 3), (2, 6)))
    teacher = logits(5, 2.0)
    whole = logits(4).requires_grad_()
    counted = y[:, 1:] != -100
    s = F.log_softmax(whole[:, :-1][counted] / 2.0, -1)
    t = F.log_softmax(teacher[:, :-1][counted] / 2.0, -1)
    expected = F.kl_div(s, t, log_target=True, reduction="batchmean")
    expected.backward()
    chunked = logits(4).requires_grad_()
    loss, kl, _ = distillation_loss(chunked, teacher, y, 2.0, 1.0, chunk_rows=chunk_rows)
    loss.backward()
    assert math.isclose(kl.item(), expected.item(), rel_tol=1e-6)
    assert math.isclose(kl.item(), reference_kl(chunked.detach(), teacher, y, 2.0), rel_tol=1e-5)
    assert torch.allclose(chunked.grad / 4.0, whole.grad, atol=1e-7)  # loss = T^2 * kl at alpha 1
