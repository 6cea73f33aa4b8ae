using System.Buffers.Binary;
using System.Text;

namespace Frugal.Peers.TorchSharp;

/// <summary>
/// Marks one needed symbol version of an ELF64 little-endian shared library as weak (VER_FLG_WEAK on its Vernaux
/// entry in .gnu.version_r), so that the dynamic loader accepts a libstdc++ that lacks it: glibc's version check
/// (dl-version.c) only warns about a missing weak version. TorchSharp-cpu 0.107's libLibTorchSharp.so needs
/// GLIBCXX_3.4.32 (GCC 13) for one symbol only, the <c>std::ios_base_library_init</c> marker that GCC 13's
/// &lt;iostream&gt; references without any relocation, so nothing ever binds to it and Debian 12's libstdc++ (up to
/// GLIBCXX_3.4.30) serves every other symbol.
/// </summary>
internal static class ElfVersionPatch
{
    /// <summary>The version TorchSharp 0.107's native library needs and Debian 12 lacks.</summary>
    public const string Glibcxx3432 = "GLIBCXX_3.4.32";

    private const uint ShtGnuVerneed = 0x6ffffffe;
    private const ushort VerFlgWeak = 0x2;

    /// <summary>What <see cref="MakeWeak(byte[], string)"/> found.</summary>
    public enum Outcome
    {
        /// <summary>The version was needed and is now weak.</summary>
        Patched,

        /// <summary>The version was weak already.</summary>
        AlreadyWeak,

        /// <summary>The library does not need the version.</summary>
        NotNeeded,
    }

    /// <summary>Sets VER_FLG_WEAK on every Vernaux entry named <paramref name="version"/> in <paramref name="elf"/>'s
    /// .gnu.version_r section, in place.</summary>
    /// <exception cref="InvalidDataException">Not an ELF64 little-endian file, or its version tables are malformed.</exception>
    public static Outcome MakeWeak(byte[] elf, string version)
    {
        ArgumentNullException.ThrowIfNull(elf);
        if (elf.Length < 64 || elf[0] != 0x7f || elf[1] != (byte)'E' || elf[2] != (byte)'L' || elf[3] != (byte)'F')
            throw new InvalidDataException("not an ELF file");
        if (elf[4] != 2 || elf[5] != 1)
            throw new InvalidDataException($"ELF class {elf[4]}, data {elf[5]}: only ELF64 little-endian is supported");
        var span = elf.AsSpan();
        var shoff = checked((int)U64(span, 0x28));
        int shentsize = U16(span, 0x3A), shnum = U16(span, 0x3C), shstrndx = U16(span, 0x3E);
        if (shentsize < 64 || shoff <= 0 || (long)shoff + (long)shnum * shentsize > elf.Length || shstrndx >= shnum)
            throw new InvalidDataException($"section headers at {shoff} ({shnum} of {shentsize} bytes) do not fit {elf.Length} bytes");
        // Section header (Elf64_Shdr): name 0, type 4, offset 24, size 32, link 40, info 44.
        Span<byte> Header(int i) => elf.AsSpan(shoff + i * shentsize, shentsize);
        var names = Header(shstrndx);
        var found = false;
        var outcome = Outcome.NotNeeded;
        for (var i = 0; i < shnum; i++)
        {
            var sh = Header(i);
            if (U32(sh, 4) != ShtGnuVerneed)
                continue;
            var name = CString(span, Section(span, names).Offset, U32(sh, 0));
            if (name != ".gnu.version_r")
                throw new InvalidDataException($"the version-needs section is called {name}, not .gnu.version_r");
            found = true;
            var (offset, size) = Section(span, sh);
            // sh_link names the string table of the version names (.dynstr); sh_info counts the Verneed entries.
            var link = (int)U32(sh, 40);
            if (link >= shnum)
                throw new InvalidDataException($".gnu.version_r links to section {link} of {shnum}");
            var strtab = Header(link);
            if (CString(span, Section(span, names).Offset, U32(strtab, 0)) != ".dynstr")
                throw new InvalidDataException(".gnu.version_r does not link to .dynstr");
            var strings = Section(span, strtab).Offset;
            var need = 0;
            for (var n = 0; n < (int)U32(sh, 44); n++)
            {
                // Elf64_Verneed: vn_version 0 (u16), vn_cnt 2 (u16), vn_file 4, vn_aux 8, vn_next 12 (u32).
                CheckInside(need, 16, size);
                var verneed = span.Slice(offset + need);
                var aux = need + (int)U32(verneed, 8);
                for (var a = 0; a < U16(verneed, 2); a++)
                {
                    // Elf64_Vernaux: vna_hash 0 (u32), vna_flags 4 (u16), vna_other 6 (u16), vna_name 8, vna_next 12 (u32).
                    CheckInside(aux, 16, size);
                    var vernaux = span.Slice(offset + aux, 16);
                    if (CString(span, strings, U32(vernaux, 8)) == version)
                    {
                        var flags = U16(vernaux, 4);
                        if ((flags & VerFlgWeak) != 0)
                        {
                            outcome = outcome == Outcome.Patched ? Outcome.Patched : Outcome.AlreadyWeak;
                        }
                        else
                        {
                            BinaryPrimitives.WriteUInt16LittleEndian(vernaux[4..], (ushort)(flags | VerFlgWeak));
                            outcome = Outcome.Patched;
                        }
                    }
                    aux += (int)U32(vernaux, 12);
                }
                need += (int)U32(verneed, 12);
            }
        }
        return found ? outcome : Outcome.NotNeeded;
    }

    /// <summary>Makes <see cref="Glibcxx3432"/> weak in the library at <paramref name="path"/> when it is needed and
    /// not weak yet. The file is rewritten through a temporary file and a rename, so a hard link into the NuGet cache
    /// (should the build ever make one) keeps the original bytes; a path inside the cache is refused.</summary>
    public static Outcome PatchFile(string path)
    {
        var nuget = Environment.GetEnvironmentVariable("NUGET_PACKAGES") ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        if (Path.GetFullPath(path).StartsWith(Path.GetFullPath(nuget) + Path.DirectorySeparatorChar, StringComparison.Ordinal))
            throw new InvalidOperationException($"refusing to patch {path}: it lies in the NuGet package cache");
        var bytes = File.ReadAllBytes(path);
        var outcome = MakeWeak(bytes, Glibcxx3432);
        if (outcome != Outcome.Patched)
            return outcome;
        var temporary = $"{path}.{Environment.ProcessId}.tmp";
        File.WriteAllBytes(temporary, bytes);
        // The copy keeps the original's size and time stamp, so an incremental build (whose copy skips unchanged
        // files by size and time) leaves the patched file in place instead of copying the original over it again.
        File.SetLastWriteTimeUtc(temporary, File.GetLastWriteTimeUtc(path));
        File.Move(temporary, path, overwrite: true);
        return outcome;
    }

    /// <summary>Patches every copy of libLibTorchSharp.so that TorchSharp may load from this application's folder
    /// (next to the assemblies, or under runtimes/linux-x64/native); returns a line per file for the log.</summary>
    public static IReadOnlyList<string> PatchApplication()
    {
        if (!OperatingSystem.IsLinux())
            return [];
        var lines = new List<string>();
        var folder = AppContext.BaseDirectory;
        foreach (var path in new[] { Path.Combine(folder, "libLibTorchSharp.so"), Path.Combine(folder, "runtimes", "linux-x64", "native", "libLibTorchSharp.so") })
        {
            if (File.Exists(path))
                lines.Add($"{Path.GetRelativePath(folder, path)}: {Glibcxx3432} {PatchFile(path) switch { Outcome.Patched => "made weak now", Outcome.AlreadyWeak => "weak already", _ => "not needed" }}");
        }
        return lines;
    }

    private static (int Offset, int Size) Section(ReadOnlySpan<byte> elf, ReadOnlySpan<byte> header)
    {
        long offset = checked((long)U64(header, 24)), size = checked((long)U64(header, 32));
        if (offset < 0 || size < 0 || offset + size > elf.Length)
            throw new InvalidDataException($"section at {offset} of {size} bytes does not fit {elf.Length} bytes");
        return ((int)offset, (int)size);
    }

    private static void CheckInside(int at, int length, int size)
    {
        if (at < 0 || at + length > size)
            throw new InvalidDataException($".gnu.version_r entry at {at} runs past the section's {size} bytes");
    }

    private static string CString(ReadOnlySpan<byte> elf, int table, uint at)
    {
        var start = checked(table + (int)at);
        if (start >= elf.Length)
            throw new InvalidDataException($"string at {start} lies past the end of the file");
        var end = elf[start..].IndexOf((byte)0);
        return Encoding.ASCII.GetString(end < 0 ? elf[start..] : elf.Slice(start, end));
    }

    private static ushort U16(ReadOnlySpan<byte> s, int at) => BinaryPrimitives.ReadUInt16LittleEndian(s[at..]);

    private static uint U32(ReadOnlySpan<byte> s, int at) => BinaryPrimitives.ReadUInt32LittleEndian(s[at..]);

    private static ulong U64(ReadOnlySpan<byte> s, int at) => BinaryPrimitives.ReadUInt64LittleEndian(s[at..]);
}
