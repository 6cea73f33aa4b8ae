namespace Frugal;

/// <summary>How a group of weights picks its scale and zero point when it is quantized (the values of the
/// <c>SCHEME_*</c> codes of <c>kernels/common.cuh</c>).</summary>
public enum QuantScheme
{
    /// <summary>Symmetric absmax: scale = max |w| / (2^(b−1) − 1), codes centred on zero = 2^(b−1) (8, 4, 2 bits).</summary>
    Symmetric = 0,

    /// <summary>Asymmetric min-max: scale = (max − min) / (2^b − 1), zero = −min / scale, so the group's range maps onto
    /// all 2^b codes.</summary>
    Asymmetric = 1,

    /// <summary>Ternary (2 bits, TWN): {−α, 0, α} with threshold Δ = 0.7·mean |w| and α = mean |w| over |w| &gt; Δ.</summary>
    Ternary = 2,

    /// <summary>Binary (1 bit, XNOR-Net): sign(w)·α with α = mean |w| of the group.</summary>
    Binary = 3,
}

/// <summary>How a quantized layer trains.</summary>
public enum QuantMode
{
    /// <summary>Full-precision latent weights are the parameter; the forward uses their quantized codes and the
    /// straight-through estimator (with clipping) passes gradients to the latent weights (DoReFa, XNOR-Net, QAT).</summary>
    Latent,

    /// <summary>The codes and scales are all that is stored: the optimizer computes each update in F32 and writes it
    /// back into the codes with stochastic rounding, re-estimating the scales.</summary>
    MasterFree,
}
