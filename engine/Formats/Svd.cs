using System.Numerics.Tensors;

namespace Frugal.Formats;

/// <summary>
/// Thin singular value decomposition A = U·diag(S)·Vᵀ of a row-major m×n float64 matrix by one-sided Jacobi
/// rotations (Hestenes): columns are rotated pairwise until all are orthogonal; their norms are the singular values.
/// Accurate to working precision, fine for the layer sizes of this project (a 784×512 matrix takes a few seconds on
/// two cores); used on the host for low-rank conversion and rank truncation, never in a training step.
/// </summary>
public static class Svd
{
    /// <summary>U [m, k] (row-major), S [k] (descending), V [n, k] (row-major), k = min(m, n).</summary>
    public static (double[] U, double[] S, double[] V) Decompose(ReadOnlySpan<double> a, int m, int n)
    {
        if (m <= 0 || n <= 0 || a.Length != (long)m * n)
            throw new ArgumentException($"SVD: {a.Length} values do not fill a [{m}, {n}] matrix with positive sizes");
        if (m < n)
        {
            // A = U S Vᵀ  ⇔  Aᵀ = V S Uᵀ.
            var t = new double[a.Length];
            for (var i = 0; i < m; i++)
            {
                for (var j = 0; j < n; j++)
                    t[j * m + i] = a[i * n + j];
            }
            var (u, s, v) = Decompose(t, n, m);
            return (v, s, u);
        }
        // Columns of A (and of V) stored contiguously: cols[j] is column j, length m.
        var cols = new double[n][];
        var vcols = new double[n][];
        for (var j = 0; j < n; j++)
        {
            cols[j] = new double[m];
            for (var i = 0; i < m; i++)
                cols[j][i] = a[i * n + j];
            vcols[j] = new double[n];
            vcols[j][j] = 1;
        }
        const double Eps = 1e-15;
        for (var sweep = 0; sweep < 60; sweep++)
        {
            var rotated = false;
            for (var p = 0; p < n - 1; p++)
            {
                for (var q = p + 1; q < n; q++)
                {
                    double alpha = TensorPrimitives.Dot<double>(cols[p], cols[p]), beta = TensorPrimitives.Dot<double>(cols[q], cols[q]);
                    var gamma = TensorPrimitives.Dot<double>(cols[p], cols[q]);
                    if (Math.Abs(gamma) <= Eps * Math.Sqrt(alpha * beta) || gamma == 0)
                        continue;
                    rotated = true;
                    var zeta = (beta - alpha) / (2 * gamma);
                    var t = Math.Sign(zeta) / (Math.Abs(zeta) + Math.Sqrt(1 + zeta * zeta));
                    if (zeta == 0)
                        t = 1;
                    var c = 1 / Math.Sqrt(1 + t * t);
                    Rotate(cols[p], cols[q], c, c * t);
                    Rotate(vcols[p], vcols[q], c, c * t);
                }
            }
            if (!rotated)
                break;
        }
        var norms = cols.Select(col => Math.Sqrt(TensorPrimitives.Dot<double>(col, col))).ToArray();
        var order = Enumerable.Range(0, n).OrderByDescending(j => norms[j]).ThenBy(j => j).ToArray();
        var uOut = new double[m * n];
        var sOut = new double[n];
        var vOut = new double[n * n];
        for (var k = 0; k < n; k++)
        {
            var j = order[k];
            sOut[k] = norms[j];
            for (var i = 0; i < m; i++)
                uOut[i * n + k] = norms[j] > 0 ? cols[j][i] / norms[j] : 0;
            for (var i = 0; i < n; i++)
                vOut[i * n + k] = vcols[j][i];
        }
        return (uOut, sOut, vOut);
    }

    /// <summary>(x, y) ← (c·x − s·y, s·x + c·y).</summary>
    private static void Rotate(double[] x, double[] y, double c, double s)
    {
        for (var i = 0; i < x.Length; i++)
        {
            var (xi, yi) = (x[i], y[i]);
            x[i] = c * xi - s * yi;
            y[i] = s * xi + c * yi;
        }
    }
}
