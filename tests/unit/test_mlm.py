"""The masked-LM forgetting control: BERT's masking, the tied head, and nothing changed when it is off."""

import pytest
import torch

from cofee.config import OptimConfig, StageOptimConfig
from cofee.data.alignment import IGNORE_INDEX
from cofee.models.mlm import MaskedLMHead, MaskingTokens, mask_tokens, masking_generator
from cofee.stages.esi import ESIModule
from cofee.utils.errors import ConfigError

TOKENS = MaskingTokens(mask_id=103, special_ids=(0, 100, 101, 102, 103), vocab_size=30522)


def words(rows: int, width: int, seed: int = 0) -> torch.Tensor:
    """Random ids of ordinary word pieces (none special)."""
    return torch.randint(1000, 30000, (rows, width), generator=torch.Generator().manual_seed(seed))


def test_special_and_padding_tokens_are_never_masked():
    ids = words(8, 12)
    ids[:, 0], ids[:, 1], ids[:, 2] = 101, 100, 103  # [CLS], [UNK], a [MASK] already in the text
    ids[:, 9] = 102  # [SEP]
    attention = torch.ones_like(ids)
    attention[:, 10:] = 0  # padding, here with word ids so only the mask can tell
    masked, targets = mask_tokens(ids, attention, TOKENS, 0.999, masking_generator("cpu", 1))
    kept = torch.zeros_like(ids, dtype=torch.bool)
    kept[:, [0, 1, 2, 9, 10, 11]] = True
    assert (targets[kept] == IGNORE_INDEX).all() and torch.equal(masked[kept], ids[kept])
    assert (targets[~kept] != IGNORE_INDEX).all()  # every word token chosen at p=0.999 (here)
    assert torch.equal(targets[~kept], ids[~kept])  # the targets are the original ids


def test_masking_rate_and_the_80_10_10_split_on_a_large_batch():
    ids = words(64, 512)
    masked, targets = mask_tokens(ids, torch.ones_like(ids), TOKENS, 0.15, masking_generator("cpu", 7))
    chosen = targets != IGNORE_INDEX
    assert chosen.float().mean().item() == pytest.approx(0.15, abs=0.005)
    assert torch.equal(masked[~chosen], ids[~chosen])  # nothing else changes
    as_mask = (masked[chosen] == TOKENS.mask_id).float().mean().item()
    unchanged = (masked[chosen] == ids[chosen]).float().mean().item()
    assert as_mask == pytest.approx(0.8, abs=0.02)
    assert unchanged == pytest.approx(0.1, abs=0.02)  # kept (a random draw of the same id is rare)
    assert 1 - as_mask - unchanged == pytest.approx(0.1, abs=0.02)  # swapped for a random id


def test_masks_are_a_function_of_the_step():
    ids = words(4, 32)
    attention = torch.ones_like(ids)

    def draw(*keys):
        return mask_tokens(ids, attention, TOKENS, 0.15, masking_generator("cpu", *keys))

    first, again, other = draw(11, 0, 3, 0), draw(11, 0, 3, 0), draw(11, 0, 4, 0)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[1], other[1])
    before = torch.get_rng_state()
    draw(11, 0, 3, 0)
    assert torch.equal(torch.get_rng_state(), before)  # the global stream (dropout's) is untouched


def test_the_decoder_is_the_input_embedding(tiny_encoder):
    embeddings = tiny_encoder.get_input_embeddings()
    head = MaskedLMHead(embeddings, tiny_encoder.config)
    assert head.decoder.weight is embeddings.weight
    assert head.decoder.weight.data_ptr() == embeddings.weight.data_ptr()
    own = {name for name, _ in head.named_parameters() if name != "decoder.weight"}
    assert own == {"transform.weight", "transform.bias", "norm.weight", "norm.bias", "bias"}
    hidden = torch.randn(2, 5, tiny_encoder.config.hidden_size)
    targets = torch.full((2, 5), IGNORE_INDEX)
    targets[0, 1], targets[1, 3] = 2000, 2001
    head.loss(hidden, targets).backward()
    assert embeddings.weight.grad is not None and embeddings.weight.grad[2000].abs().sum() > 0
    nothing = head.loss(hidden, torch.full((2, 5), IGNORE_INDEX))
    assert nothing.item() == 0.0 and nothing.requires_grad  # no chosen token: 0, still in the graph


def test_mlm_off_adds_no_parameter_and_leaves_the_loss_as_it_was(tiny_encoder, tokenizer):
    plain = ESIModule(tiny_encoder, OptimConfig())
    off = ESIModule(tiny_encoder, StageOptimConfig())
    assert off.mlm_head is None
    assert off.state_dict().keys() == plain.state_dict().keys()
    batch = {**tokenizer(["Ada Lovelace met Babbage"], return_tensors="pt")}
    batch["labels"] = torch.zeros_like(batch["input_ids"])
    off.eval()
    hidden = off.encode(batch)
    task = off.head.loss(off.head(hidden), batch)
    assert off.with_forgetting_controls(task, hidden, batch, 0) is task


def test_mlm_on_adds_only_the_head_and_its_loss(tiny_encoder, tokenizer):
    module = ESIModule(tiny_encoder, StageOptimConfig(mlm_weight=0.5))
    extra = module.state_dict().keys() - ESIModule(tiny_encoder, StageOptimConfig()).state_dict().keys()
    assert extra and all(k.startswith("mlm_head.") for k in extra)
    module.mlm_tokens = MaskingTokens.from_tokenizer(tokenizer, module.mlm_head.bias.numel())
    assert module.mlm_tokens.mask_id == tokenizer.mask_token_id
    assert tokenizer.pad_token_id in module.mlm_tokens.special_ids
    text = "Ada Lovelace worked with Charles Babbage in London on the engine " * 4
    batch = {**tokenizer([text], return_tensors="pt")}
    batch["labels"] = torch.zeros_like(batch["input_ids"])
    module.eval()
    hidden = module.encode(batch)
    task = module.head.loss(module.head(hidden), batch)
    torch.manual_seed(5)  # the step seed StepSeedCallback would set
    total = module.with_forgetting_controls(task, hidden, batch, 0)
    torch.manual_seed(5)
    mlm = module.mlm_loss(batch, 0)
    assert mlm.item() > 0
    assert total.item() == pytest.approx(task.item() + 0.5 * mlm.item(), rel=1e-6)


def test_a_training_step_that_skips_the_mlm_loss_is_refused(tiny_encoder):
    module = ESIModule(tiny_encoder, StageOptimConfig(mlm_weight=1.0))
    with pytest.raises(ConfigError, match=r"stages\.esi\.optim\.mlm_weight"):
        module.on_train_batch_end(None, {}, 0)
    module._mlm_added = True
    module.on_train_batch_end(None, {}, 0)  # the step added it: no error, and the flag is reset
    assert module._mlm_added is False


@pytest.mark.parametrize("stage", ["esi", "nee", "fet"])
def test_a_stage_finished_before_the_keys_existed_stays_finished(compose_cfg, stage):
    from cofee.config import validate
    from cofee.pipeline.curriculum import input_changes, stage_inputs

    def inputs(*overrides):
        return stage_inputs(validate(compose_cfg(list(overrides))), stage, "parent")

    recorded = inputs()
    for key in ("mlm_weight", "mlm_probability"):  # as a version without the masked-LM keys wrote it
        del recorded["stages"][stage]["optim"][key]
    assert input_changes(stage, recorded, inputs()) == []
    assert [c[0] for c in input_changes(stage, recorded, inputs(f"stages.{stage}.optim.mlm_weight=1.0"))] == [
        f"stages.{stage}.optim.mlm_weight"
    ]
