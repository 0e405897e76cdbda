"""Optional: the package against transformers' own MoE blocks, built here
from a small config (AutoConfig.for_model + from_config), saved with
save_pretrained and loaded back with Layer.from_pretrained. Skipped when
torch or transformers is missing (the fixtures of test_checkpoints.py hold
transformers' outputs for every architecture without them)."""

import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed (optional comparison)")
transformers = pytest.importorskip(
    "transformers", reason="transformers is not installed (optional comparison)")


import moevk  # noqa: E402
from conftest import rel_l2  # noqa: E402

SMALL = dict(hidden_size=64, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
             vocab_size=128, head_dim=16, intermediate_size=96)
CASES = {
    "mixtral": dict(SMALL, num_local_experts=8, num_experts_per_tok=2),
    "qwen3_moe": dict(SMALL, moe_intermediate_size=32, num_experts=8, num_experts_per_tok=2,
                      norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[]),
}


def moe_block(model):
    layer = model.model.layers[0]
    for name in ("mlp", "block_sparse_moe"):
        if hasattr(layer, name):
            return getattr(layer, name)
    raise AssertionError(f"no MoE block in {type(layer).__name__}")


@pytest.mark.parametrize("model_type", sorted(CASES))
def test_against_transformers(ctx, tmp_path, model_type):
    cfg = transformers.AutoConfig.for_model(model_type, **CASES[model_type])
    torch.manual_seed(61)
    model = transformers.AutoModelForCausalLM.from_config(cfg).float().eval()
    if hasattr(model.config, "_experts_implementation"):
        model.config._experts_implementation = "eager"  # float64 runs eager only
    block = moe_block(model)
    with torch.no_grad():
        for p in block.parameters():  # clear routing margins
            p.normal_(0.0, 0.3)
    model.save_pretrained(tmp_path)
    x = torch.randn(1, 9, 64, generator=torch.Generator().manual_seed(62))
    with torch.no_grad():
        want = block.double()(x.double())
    if isinstance(want, tuple):  # transformers 4 returns (y, router_logits)
        want = want[0]
    want = want.numpy()
    for backend, context, tol in (("cpu", None, 1e-6), ("vulkan", ctx, 1e-5)):
        layer = moevk.Layer.from_pretrained(tmp_path, 0, backend=backend, context=context)
        y = layer(x)  # a torch tensor in, a torch tensor out
        assert isinstance(y, torch.Tensor) and tuple(y.shape) == (1, 9, 64)
        assert rel_l2(y.numpy(), want) < tol, f"{model_type} on {backend}"
