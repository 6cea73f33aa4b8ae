namespace Frugal;

/// <summary>Disposes, when it ends, every tensor created on this thread while it was the innermost scope,
/// except those kept (<see cref="Tensor.DetachFromScope"/>) or moved out (<see cref="Tensor.MoveToOuter"/>).
/// <c>using var scope = TensorScope.Begin();</c> in a training loop frees each step's temporaries.</summary>
public sealed class TensorScope : IDisposable
{
    [ThreadStatic] private static TensorScope? t_current;

    private readonly List<Tensor> _tensors = [];
    private bool _disposed;

    private TensorScope(TensorScope? parent) => Parent = parent;

    /// <summary>The enclosing scope.</summary>
    public TensorScope? Parent { get; }

    /// <summary>The innermost scope of this thread.</summary>
    public static TensorScope? Current => t_current;

    /// <summary>Opens a scope nested in the current one.</summary>
    public static TensorScope Begin()
    {
        var s = new TensorScope(t_current);
        t_current = s;
        return s;
    }

    internal static void Register(Tensor t) => t_current?.Adopt(t);

    internal void Adopt(Tensor t)
    {
        t.Scope = this;
        _tensors.Add(t);
    }

    /// <summary>Keeps <paramref name="t"/> alive past this scope: the caller owns it.</summary>
    public Tensor Keep(Tensor t) => t.DetachFromScope();

    /// <summary>Number of tensors this scope will dispose.</summary>
    public int Count => _tensors.Count(t => ReferenceEquals(t.Scope, this) && !t.IsDisposed);

    /// <summary>Disposes the scope's tensors and makes the parent current again.</summary>
    public void Dispose()
    {
        if (_disposed)
            return;
        if (!ReferenceEquals(t_current, this))
            throw new InvalidOperationException("TensorScope disposed out of order: an inner scope is still open");
        _disposed = true;
        t_current = Parent;
        foreach (var t in _tensors)
        {
            if (ReferenceEquals(t.Scope, this))
                t.Dispose();
        }
        _tensors.Clear();
    }
}
