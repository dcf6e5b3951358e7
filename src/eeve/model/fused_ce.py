"""The output head's matmul and cross-entropy fused and chunked over tokens, for a head split into old and new rows:
no [tokens x vocab] logit tensor is kept for backward, and frozen blocks get no weight-gradient product."""

from __future__ import annotations

import torch


class SplitHeadCrossEntropy(torch.autograd.Function):
    """Mean next-token cross-entropy of ``hidden @ [w_old; w_new].T`` against ``targets``, fused and chunked.

    Forward walks the tokens in chunks: logits of one chunk (both blocks, never concatenated), fp32 log-softmax
    statistics, the chunk's losses and — when a gradient is wanted — at once its logit gradient
    ``softmax - onehot``, turned into the chunk's hidden gradient and accumulated into the weight gradients of
    the blocks that train. Backward only scales these by the incoming scalar. Peak memory is one chunk's logits,
    not [tokens x vocab]; the matmul work is the same as an unfused head (forward, and one product per gradient
    actually needed: frozen blocks get no weight-gradient product, a frozen backbone no hidden-gradient product).
    ``logit_scale`` and ``softcap`` reproduce the model's own output transform (``cap * tanh(scale * z / cap)``,
    Gemma 2/3, Granite, Cohere); the logit gradient is multiplied by its derivative.
    Returns (mean loss over targets != ignore_index, per-token losses detached)."""

    @staticmethod
    def forward(ctx, hidden, w_old, w_new, targets, chunk_tokens, ignore_index, need, logit_scale=1.0, softcap=None):
        need_h, need_old, need_new = need
        h = hidden.reshape(-1, hidden.shape[-1])
        t = targets.reshape(-1).long()
        n, base = h.shape[0], w_old.shape[0]
        valid = t != ignore_index
        n_valid = max(int(valid.sum()), 1)
        losses = torch.zeros(n, dtype=torch.float32, device=h.device)
        gh = torch.empty_like(h) if need_h else None
        g_old = torch.zeros(w_old.shape, dtype=torch.float32, device=h.device) if need_old else None
        g_new = torch.zeros(w_new.shape, dtype=torch.float32, device=h.device) if need_new else None
        for a in range(0, n, chunk_tokens):
            hc, tc, vc = h[a : a + chunk_tokens], t[a : a + chunk_tokens], valid[a : a + chunk_tokens]
            lo, ln = (hc @ w_old.T).float(), (hc @ w_new.T).float()
            if logit_scale != 1.0 or softcap:  # the model's own output transform (see split.transform_logits)
                lo, ln = lo.mul_(logit_scale), ln.mul_(logit_scale)
                if softcap:
                    lo, ln = lo.div_(softcap).tanh_(), ln.div_(softcap).tanh_()
                    # d logit / d raw = scale * (1 - tanh^2), applied to the logit gradient below
                    if any(need):
                        d_old, d_new = (1 - lo * lo).mul_(logit_scale), (1 - ln * ln).mul_(logit_scale)
                    lo, ln = lo.mul_(softcap), ln.mul_(softcap)
            lse = torch.logaddexp(torch.logsumexp(lo, -1), torch.logsumexp(ln, -1))
            is_new = tc >= base
            tgt = lo.gather(-1, tc.clamp(0, base - 1)[:, None]).squeeze(-1)
            if ln.shape[-1]:  # no new rows (recipe=no_expansion): every target is an old row
                tgt = torch.where(
                    is_new, ln.gather(-1, (tc - base).clamp(0, ln.shape[-1] - 1)[:, None]).squeeze(-1), tgt
                )
            losses[a : a + chunk_tokens] = torch.where(vc, lse - tgt, 0.0)
            if not any(need):
                continue
            # d(mean loss)/d(logits) = (softmax - onehot) / n_valid, zero for ignored tokens; in place on the logits
            scale = (vc.float() / n_valid)[:, None]
            lo.sub_(lse[:, None]).exp_().mul_(scale)
            ln.sub_(lse[:, None]).exp_().mul_(scale)
            rows = torch.arange(len(tc), device=h.device)
            sel = vc & ~is_new
            lo[rows[sel], tc[sel]] -= scale[sel, 0]
            sel = vc & is_new
            ln[rows[sel], tc[sel] - base] -= scale[sel, 0]
            if softcap:
                lo.mul_(d_old), ln.mul_(d_new)
            elif logit_scale != 1.0:
                lo.mul_(logit_scale), ln.mul_(logit_scale)
            if need_h:
                gh[a : a + chunk_tokens] = (lo.to(w_old.dtype) @ w_old + ln.to(w_new.dtype) @ w_new).to(h.dtype)
            if need_old:
                g_old += lo.T @ hc.float()
            if need_new:
                g_new += ln.T @ hc.float()
        ctx.save_for_backward(*(x for x in (gh, g_old, g_new) if x is not None))
        ctx.need, ctx.hidden_shape = need, hidden.shape
        ctx.dtypes = (w_old.dtype, w_new.dtype)
        per_token = losses.view(targets.shape)
        ctx.mark_non_differentiable(per_token)
        return (losses * valid).sum() / n_valid, per_token

    @staticmethod
    def backward(ctx, grad_loss, _grad_losses):
        saved = iter(ctx.saved_tensors)
        need_h, need_old, need_new = ctx.need
        gh = (next(saved) * grad_loss).view(ctx.hidden_shape) if need_h else None
        g_old = (next(saved) * grad_loss).to(ctx.dtypes[0]) if need_old else None
        g_new = (next(saved) * grad_loss).to(ctx.dtypes[1]) if need_new else None
        return gh, g_old, g_new, None, None, None, None, None, None
