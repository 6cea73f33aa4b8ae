namespace Frugal.Memory;

/// <summary>The ambient category and owner label given to buffers that ops allocate for their results.
/// Forward runs as Activation (owner: the module path), backward as Gradient, optimizers as OptimizerState.</summary>
public static class MemoryContext
{
    [ThreadStatic] private static MemoryCategory? t_category;
    [ThreadStatic] private static string? t_owner;

    /// <summary>Category for op results on this thread (Activation unless a scope says otherwise).</summary>
    public static MemoryCategory Category => t_category ?? MemoryCategory.Activation;

    /// <summary>Category for tensors made by the factories (<c>Tensor.Zeros</c>, <c>Uniform</c>, <c>FromArray</c> ...)
    /// without an explicit one: the ambient category when a scope set one, else Other (user data).</summary>
    public static MemoryCategory CreationCategory => t_category ?? MemoryCategory.Other;

    /// <summary>Owner label for op results on this thread.</summary>
    public static string Owner => t_owner ?? "";

    /// <summary>Sets the category (and owner, when given) until the returned scope is disposed.</summary>
    public static Scope Use(MemoryCategory category, string? owner = null)
    {
        var s = new Scope(t_category, t_owner);
        t_category = category;
        if (owner is not null)
            t_owner = owner;
        return s;
    }

    /// <summary>Sets the owner label until the returned scope is disposed.</summary>
    public static Scope Owned(string owner)
    {
        var s = new Scope(t_category, t_owner);
        t_owner = owner;
        return s;
    }

    /// <summary>Restores the previous category and owner.</summary>
    public readonly struct Scope : IDisposable
    {
        private readonly MemoryCategory? _category;
        private readonly string? _owner;

        internal Scope(MemoryCategory? category, string? owner)
        {
            _category = category;
            _owner = owner;
        }

        /// <inheritdoc/>
        public void Dispose()
        {
            t_category = _category;
            t_owner = _owner;
        }
    }
}
