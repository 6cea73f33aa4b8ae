using System.Runtime.Intrinsics.X86;

namespace Frugal.Bench;

/// <summary>How many fp32 FMA lanes one core retires per cycle, from CPUID: the factor of the theoretical peak
/// (cores x FMA units x lanes x 2 flops x clock) that the instruction set alone does not tell.</summary>
public readonly record struct FmaWidth(int Units, int Lanes, string Why)
{
    public static FmaWidth Detect()
    {
        if (!Fma.IsSupported)
            return new FmaWidth(1, 4, "no FMA: assuming one 128-bit multiply-add pipe");
        if (!Avx512F.IsSupported)
            return new FmaWidth(2, 8, "AVX2 + FMA: two 256-bit FMA pipes");
        var (vendor, family) = VendorAndFamily();
        if (vendor == "AuthenticAMD" && family <= 0x19)
            return new FmaWidth(2, 8, $"AMD family 0x{family:X} (Zen 4): AVX-512 executes as two 256-bit halves");
        if (vendor == "AuthenticAMD")
            return new FmaWidth(2, 16, $"AMD family 0x{family:X} (Zen 5 or later): two full 512-bit FMA pipes");
        return new FmaWidth(2, 16, $"{vendor} with AVX-512: assuming two 512-bit FMA pipes (server parts)");
    }

    private static (string Vendor, int Family) VendorAndFamily()
    {
        var (_, ebx, ecx, edx) = X86Base.CpuId(0, 0);
        Span<byte> name = stackalloc byte[12];
        BitConverter.TryWriteBytes(name[..4], ebx);
        BitConverter.TryWriteBytes(name[4..8], edx);
        BitConverter.TryWriteBytes(name[8..], ecx);
        var eax = X86Base.CpuId(1, 0).Eax;
        var family = (eax >> 8) & 0xF;
        if (family == 0xF)
            family += (eax >> 20) & 0xFF;
        return (System.Text.Encoding.ASCII.GetString(name), family);
    }
}
