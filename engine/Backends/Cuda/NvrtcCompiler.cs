using System.Runtime.InteropServices;
using System.Text;
using Frugal.Backends.Cuda.Native;

namespace Frugal.Backends.Cuda;

/// <summary><see cref="IKernelCompiler"/> over NVRTC: CUDA C to CUBIN for the architecture named in the options.
/// <paramref name="onLog"/>, when given, receives the program's name and NVRTC's log after each successful
/// compilation (with <c>--ptxas-options=-v</c> the log holds ptxas's per-kernel resource report).</summary>
internal sealed unsafe class NvrtcCompiler(Action<string, string>? onLog = null) : IKernelCompiler
{
    private readonly Lazy<string> _version = new(() =>
    {
        Nvrtc.Check(Nvrtc.Version(out var major, out var minor), "nvrtcVersion");
        // Where it came from is part of the cache key too: the emulated NVRTC (emulator/out) reports the real
        // version it fronts, and its host modules must never be mistaken for a GPU's CUBINs.
        return $"nvrtc {major}.{minor} ({CudaLibraries.LoadedFrom(CudaLibraries.Nvrtc)})";
    });

    /// <inheritdoc/>
    public string Version => _version.Value;

    /// <inheritdoc/>
    public byte[] Compile(string name, string source, IReadOnlyDictionary<string, string> headers, IReadOnlyList<string> options)
    {
        var strings = new List<nint>();
        nint Utf8(string s)
        {
            var bytes = Encoding.UTF8.GetBytes(s);
            var p = (byte*)NativeMemory.Alloc((nuint)bytes.Length + 1);
            bytes.CopyTo(new Span<byte>(p, bytes.Length));
            p[bytes.Length] = 0;
            strings.Add((nint)p);
            return (nint)p;
        }
        var headerTexts = (byte**)NativeMemory.Alloc((nuint)Math.Max(headers.Count, 1), (nuint)sizeof(byte*));
        var headerNames = (byte**)NativeMemory.Alloc((nuint)Math.Max(headers.Count, 1), (nuint)sizeof(byte*));
        var optionTexts = (byte**)NativeMemory.Alloc((nuint)Math.Max(options.Count, 1), (nuint)sizeof(byte*));
        nint program = 0;
        try
        {
            var i = 0;
            foreach (var (include, text) in headers)
            {
                headerTexts[i] = (byte*)Utf8(text);
                headerNames[i++] = (byte*)Utf8(include);
            }
            for (var j = 0; j < options.Count; j++)
                optionTexts[j] = (byte*)Utf8(options[j]);
            Nvrtc.Check(Nvrtc.CreateProgram(out program, (byte*)Utf8(source), (byte*)Utf8(name), headers.Count, headerTexts, headerNames), "nvrtcCreateProgram");
            var status = Nvrtc.CompileProgram(program, options.Count, optionTexts);
            if (status == Nvrtc.ErrorBuiltinOperationFailure)
                throw new KernelCompileException($"{name}: NVRTC could not run its built-in operations: libnvrtc-builtins (installed with libnvrtc, same version) is missing or unloadable. Log: {Log(program)}");
            if (status != 0)
                throw new KernelCompileException($"{name} ({string.Join(' ', options)}) does not compile:\n{Log(program)}");
            Nvrtc.Check(Nvrtc.GetCubinSize(program, out var size), "nvrtcGetCUBINSize");
            var cubin = new byte[(int)size];
            fixed (byte* p = cubin)
                Nvrtc.Check(Nvrtc.GetCubin(program, p), "nvrtcGetCUBIN");
            onLog?.Invoke(name, Log(program));
            return cubin;
        }
        finally
        {
            if (program != 0)
                Nvrtc.DestroyProgram(ref program);
            foreach (var p in strings)
                NativeMemory.Free((void*)p);
            NativeMemory.Free(headerTexts);
            NativeMemory.Free(headerNames);
            NativeMemory.Free(optionTexts);
        }
    }

    private static string Log(nint program)
    {
        if (Nvrtc.GetProgramLogSize(program, out var size) != 0 || size <= 1)
            return "(no log)";
        var log = new byte[(int)size];
        fixed (byte* p = log)
        {
            if (Nvrtc.GetProgramLog(program, p) != 0)
                return "(log unavailable)";
        }
        return Encoding.UTF8.GetString(log, 0, log.Length - 1);
    }
}
