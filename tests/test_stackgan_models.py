"""StackGAN's networks (gan.models.stackgan), its caption encoder (gan.models.text) and its losses."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gan.losses import conditioning_kl, d_loss_matching_aware
from gan.models import NETWORKS, build_network, describe
from gan.models.stackgan import (
    ConditioningAugmentation,
    StackGANDiscriminator,
    StackGANGenerator,
    StackGANStage1,
    StackGANStage2,
)
from gan.models.text import (
    PAD,
    UNK,
    TextEncoder,
    build_vocab,
    class_agreement,
    encode_captions,
    tokenize,
    train_text_encoder,
)

CAPTIONS = ["A red bird, small.", "a blue bird with a long tail", "red and blue"]


def _G_kwargs(
    channels: int = 3, image_size: int = 32, stage1_size: int = 16, num_classes: int = 3
) -> dict:
    return {
        "z_dim": 8, "text_dim": 16, "c_dim": 8, "g_width": 32, "channels": channels,
        "image_size": image_size, "stage1_size": stage1_size, "n_res": 1,
        "vocab": build_vocab(CAPTIONS), "embed_dim": 8, "max_len": 6, "num_classes": num_classes,
    }  # fmt: skip


# --- networks ----------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize(("image_size", "stage1_size"), [(16, 8), (16, 4), (32, 16), (32, 8)])
def test_shapes_of_both_stages_and_discriminators(
    channels: int, image_size: int, stage1_size: int
) -> None:
    torch.manual_seed(0)
    G = StackGANGenerator(**_G_kwargs(channels, image_size, stage1_size))
    z, y = torch.randn(4, G.z_dim), torch.tensor([0, 1, 2, 0])  # noise 8 + two CA draws of 8
    assert G.z_dim == 8 + 2 * 8
    emb = G.condition(y, None, 4)
    low, high, (mu1, lv1), (mu2, lv2) = G.forward_stages(z, emb)
    assert low.shape == (4, channels, stage1_size, stage1_size)
    assert high.shape == (4, channels, image_size, image_size)
    assert mu1.shape == lv1.shape == mu2.shape == lv2.shape == (4, 8)
    for stage in (1, 2):
        G.set_stage(stage)
        x = G(z, y)
        assert x.shape == (4, channels, image_size, image_size)
        assert x.abs().max() <= 1.0
    for size, img in ((stage1_size, low), (image_size, high)):
        D = StackGANDiscriminator(
            channels=channels, image_size=size, width=32, text_dim=16, c_dim=8
        )
        assert D(img.detach(), emb).shape == (4,)


def test_stage1_output_is_the_bicubic_upsampled_stage1_image() -> None:
    G = StackGANGenerator(**_G_kwargs()).eval()  # the CA draws come from the latent
    z, y = torch.randn(3, G.z_dim), torch.tensor([2, 0, 1])
    x = G(z, y)
    assert torch.equal(x, G(z, y))  # the latent fixes the sample
    low, _, _ = G.stage1(z[:, :8], G.class_embeddings[y], z[:, 8:16])
    expected = F.interpolate(low, size=32, mode="bicubic", align_corners=False).clamp(-1, 1)
    assert torch.equal(x, expected)
    assert int(G.stage) == 1


def test_stage2_path_uses_stage2_and_conditions_on_text() -> None:
    torch.manual_seed(0)
    G = StackGANGenerator(**_G_kwargs()).eval()
    G.set_stage(2)
    tokens, _ = encode_captions(["a red bird", "a blue bird"], G.vocab, G.max_len)
    text = G.encode(tokens)
    z = torch.randn(2, G.z_dim)
    x = G(z, text=text)
    low, _, _ = G.stage1(z[:, :8], text, z[:, 8:16])
    assert torch.equal(x, G.stage2(low, text, z[:, 16:])[0])
    assert x.shape == (2, 3, 32, 32)
    # no labels and no caption: class embedding row 0 for the whole batch
    assert G.condition(None, None, 5).shape == (5, 16)
    # the encoder is featurize's, frozen
    assert not any(p.requires_grad for p in G.text.parameters())
    with pytest.raises(ValueError, match="stage"):
        G.set_stage(3)


def test_state_dict_round_trip_through_the_registry() -> None:
    kwargs = _G_kwargs()
    torch.manual_seed(0)
    G = build_network("stackgan.G", **kwargs)
    G.class_embeddings.normal_()
    G.set_stage(2)
    G.eval()
    H = build_network("stackgan.G", **kwargs)
    H.load_state_dict(G.state_dict(), strict=True)
    H.eval()
    assert int(H.stage) == 2
    z, y = torch.randn(4, G.z_dim), torch.tensor([0, 1, 2, 1])
    assert torch.equal(G(z, y), H(z, y))
    assert {"stackgan.G", "stackgan.stage1", "stackgan.stage2", "stackgan.D"} <= set(NETWORKS)
    assert "stackgan" in describe()


def test_every_discriminator_parameter_gets_a_gradient() -> None:
    D = StackGANDiscriminator(channels=3, image_size=32, width=32, text_dim=16, c_dim=8)
    logits = D(torch.randn(4, 3, 32, 32), torch.randn(4, 16))
    assert logits.shape == (4,)
    d_loss_matching_aware(logits, logits * 0.5, logits * 0.25).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in D.parameters())


def test_stages_reject_bad_sizes_and_shapes() -> None:
    with pytest.raises(ValueError):
        StackGANStage2(
            text_dim=16, c_dim=8, width=16, channels=3, in_size=32, image_size=32, n_res=1
        )
    with pytest.raises(ValueError):
        StackGANStage2(
            text_dim=16, c_dim=8, width=16, channels=3, in_size=12, image_size=48, n_res=1
        )
    stage1 = StackGANStage1(z_dim=8, text_dim=16, c_dim=8, width=16, channels=1, size=8)
    with pytest.raises(ValueError, match="text embedding"):
        stage1(torch.randn(2, 8), torch.randn(3, 16))


def test_conditioning_augmentation_samples_and_its_kl() -> None:
    ca = ConditioningAugmentation(text_dim=16, c_dim=4).eval()
    emb = torch.randn(5, 16)
    c1, mu, logvar = ca(emb)
    c2, _, _ = ca(emb)
    assert c1.shape == mu.shape == logvar.shape == (5, 4)
    assert not torch.equal(c1, c2)  # eps is drawn in eval mode too
    zero = torch.zeros(5, 4)
    assert conditioning_kl(zero, zero).item() == 0.0
    assert conditioning_kl(zero + 0.5, zero).item() > 0
    assert conditioning_kl(zero, zero - 1.0).item() > 0
    # 1/2 (mu^2 + e^lv - 1 - lv) with mu = 1, lv = 0 is 1/2
    assert conditioning_kl(zero + 1.0, zero).item() == pytest.approx(0.5)


def test_matching_aware_loss_weights_fake_and_wrong_by_half() -> None:
    r, f, w = torch.tensor([2.0, -1.0]), torch.tensor([0.5, 1.0]), torch.tensor([-3.0, 0.0])
    bce = F.binary_cross_entropy_with_logits
    expected = bce(r, torch.ones(2)) + 0.5 * (bce(f, torch.zeros(2)) + bce(w, torch.zeros(2)))
    assert d_loss_matching_aware(r, f, w).item() == pytest.approx(expected.item(), rel=1e-6)


# --- caption encoder ---------------------------------------------------------------------


def test_encode_captions_round_trip_unknown_words_and_empty_caption() -> None:
    vocab = build_vocab(CAPTIONS)
    assert vocab[:2] == ["<pad>", "<unk>"] and vocab[2:] == sorted(set(vocab[2:]))
    assert tokenize("A red-bird, 2x!") == ["a", "red", "bird", "2x"]
    tokens, unknown = encode_captions(CAPTIONS, vocab, max_len=5)
    assert tokens.shape == (3, 5) and tokens.dtype == torch.long and unknown == []
    for row, caption in zip(tokens, CAPTIONS, strict=True):
        assert [vocab[i] for i in row.tolist() if i != PAD] == tokenize(caption)[:5]
    tokens, unknown = encode_captions(["a green bird, green tail", "zebra"], vocab, max_len=8)
    assert unknown == ["green", "zebra"]
    assert tokens[0, :5].tolist() == [
        vocab.index("a"),
        UNK,
        vocab.index("bird"),
        UNK,
        vocab.index("tail"),
    ]
    assert tokens[1].tolist() == [UNK] + [PAD] * 7
    with pytest.raises(ValueError, match=r"caption 1 \('\.\.\. !'\) has no words"):
        encode_captions(["red", "... !"], vocab, max_len=4)


def test_text_encoder_ignores_padding_and_survives_all_pad_rows() -> None:
    torch.manual_seed(0)
    encoder = TextEncoder(vocab_size=10, embed_dim=8, text_dim=6)
    short = torch.tensor([[3, 4, 5, PAD]])
    long = torch.tensor([[3, 4, 5, PAD, PAD, PAD, PAD]])
    assert torch.allclose(encoder(short), encoder(long), atol=1e-6)
    out = encoder(torch.full((2, 4), PAD))
    assert out.shape == (2, 6) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in encoder.parameters() if p.grad is not None)


def test_train_text_encoder_separates_classes_on_a_toy_problem() -> None:
    # the class word is one of seven; five random distractor words keep an untrained encoder's
    # nearest neighbours mostly of another class
    g = torch.Generator().manual_seed(0)
    colours, distractors = ["red", "blue", "green"], [f"w{i}" for i in range(40)]
    captions, labels = [], []
    for i in range(96):
        words = [distractors[int(j)] for j in torch.randint(40, (5,), generator=g)]
        captions.append(f"a {colours[i % 3]} thing {' '.join(words)}")
        labels.append(i % 3)
    labels_t = torch.tensor(labels)
    centres = torch.randn(3, 12, generator=g) * 3
    features = centres[labels_t] + 0.3 * torch.randn(96, 12, generator=g)  # images differ by class
    vocab = build_vocab(captions)
    tokens, _ = encode_captions(captions, vocab, max_len=8)
    kwargs = {
        "vocab_size": len(vocab),
        "embed_dim": 16,
        "text_dim": 16,
        "epochs": 40,
        "batch_size": 32,
        "lr": 3e-3,
        "seed": 1,
    }
    torch.manual_seed(1)
    with torch.no_grad():
        assert class_agreement(TextEncoder(len(vocab), 16, 16)(tokens), labels_t) < 0.7  # untrained
    state = torch.random.get_rng_state()
    encoder, fit = train_text_encoder(tokens, features, **kwargs)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is untouched
    assert not encoder.training
    assert fit["loss"] < fit["loss_first"] - 1.0
    with torch.no_grad():
        assert class_agreement(encoder(tokens), labels_t) >= 0.9
    again, fit_again = train_text_encoder(tokens, features, **kwargs)
    assert fit_again == fit  # deterministic for a seed on CPU
    assert all(
        torch.equal(a, b)
        for a, b in zip(encoder.state_dict().values(), again.state_dict().values(), strict=True)
    )


def test_class_agreement_is_leave_one_out() -> None:
    emb = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    assert class_agreement(emb, torch.tensor([0, 0, 1, 1])) == 1.0
    assert class_agreement(emb, torch.tensor([0, 1, 0, 1])) == 0.0
    assert class_agreement(emb, torch.tensor([0, 0, 1, 1]), chunk=1) == 1.0
