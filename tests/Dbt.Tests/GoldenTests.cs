using System.Text;
using Harness.Dbt.Reports;
using Xunit;

namespace Harness.Dbt.Tests;

/// <summary>
/// Golden translations of representative kernel blocks (tests/Dbt.Tests/Golden/*.txt, made by
/// <see cref="GoldenBlocks"/>). A rule change makes these fail with a diff; when the change is
/// intended, regenerate with HARNESS_UPDATE_GOLDEN=1 and review the diff of the files in the commit.
/// </summary>
public class GoldenTests
{
    private static readonly Lazy<byte[]> kernel = new(() => File.ReadAllBytes(KernelSupport.KernelPath));

    private static (byte[] Elf, string Name) ImageOf(GoldenBlocks.Golden g) => g.Image == GoldenBlocks.Golden.KernelImage
        ? (kernel.Value, "kernel.elf")
        : (File.ReadAllBytes(Path.Combine(Support.RepoRoot, "guest", "build", g.Image)), Path.GetFileName(g.Image));

    public static string GoldenDirectory => Path.Combine(Support.RepoRoot, "tests", "Dbt.Tests", "Golden");

    public static TheoryData<string> Names()
    {
        var d = new TheoryData<string>();
        foreach (var g in GoldenBlocks.All) d.Add(g.Name);
        return d;
    }

    private static GoldenBlocks.Golden Get(string name) => GoldenBlocks.All.Single(g => g.Name == name);

    [Theory]
    [MemberData(nameof(Names))]
    public void TranslationMatchesGolden(string name)
    {
        var g = Get(name);
        var (elf, imageName) = ImageOf(g);
        string actual = GoldenBlocks.Render(g, elf, imageName);
        string file = GoldenBlocks.FileOf(GoldenDirectory, g);
        if (Environment.GetEnvironmentVariable(GoldenBlocks.UpdateVariable) == "1")
        {
            Directory.CreateDirectory(GoldenDirectory);
            File.WriteAllText(file, actual);
            return;
        }
        Assert.True(File.Exists(file), $"no golden file {file}; create it with {GoldenBlocks.UpdateVariable}=1");
        string expected = File.ReadAllText(file);
        if (expected != actual)
            Assert.Fail($"the translation of '{name}' differs from {file} (- golden, + now). If the rule change is intended, " +
                        $"regenerate with {GoldenBlocks.UpdateVariable}=1 and commit the new file.\n{Diff(expected, actual)}");
    }

    [Fact]
    public void EveryGoldenFileHasAGolden()
    {
        var stale = Directory.GetFiles(GoldenDirectory, "*.txt").Select(Path.GetFileNameWithoutExtension)
            .Except(GoldenBlocks.All.Select(g => g.Name)).ToList();
        Assert.True(stale.Count == 0, $"golden files no golden produces: {string.Join(", ", stale)}");
    }

    /// <summary>
    /// The point of the goldens: a planted rule change (the two planted options of the translator)
    /// turns into a diff of exactly the goldens that use the rule, showing the changed lines.
    /// </summary>
    [Theory]
    [InlineData(nameof(DbtOptions.PlantedNoTxNextPcRestore), "isr-exit,isr-page-fault-gate,isr-timer-gate", "popq    %gs:")]
    [InlineData(nameof(DbtOptions.PlantedLookupWithInterrupts), "switch-jump,syscall-dispatch,syscall-dispatch.no-callret", "cli")]
    public void APlantedRuleChangeShowsUpAsAGoldenDiff(string planted, string expectChanged, string removedText)
    {
        var options = planted == nameof(DbtOptions.PlantedNoTxNextPcRestore)
            ? new DbtOptions { PlantedNoTxNextPcRestore = true }
            : new DbtOptions { PlantedLookupWithInterrupts = true };
        var changed = new List<string>();
        foreach (var g in GoldenBlocks.All)
        {
            var (elf, imageName) = ImageOf(g);
            string normal = GoldenBlocks.Render(g, elf, imageName);
            string plantedText = GoldenBlocks.Render(g, elf, imageName, options);
            if (normal == plantedText) continue;
            changed.Add(g.Name);
            string diff = Diff(normal, plantedText);
            Assert.Contains(diff.Split('\n'), l => l.StartsWith('-') && l.Contains(removedText));
        }
        var expected = expectChanged.Split(',').Order();
        Assert.Equal(expected, changed.Order());
    }

    [Fact]
    public void RenderingIsReproducible()
    {
        var g = Get("syscall-dispatch");
        Assert.Equal(GoldenBlocks.Render(g, kernel.Value, "kernel.elf"), GoldenBlocks.Render(g, kernel.Value, "other/path/kernel.elf"));
    }

    /// <summary>A line diff (longest common subsequence; golden files are a few hundred lines at most).</summary>
    internal static string Diff(string expected, string actual, int context = 2)
    {
        var a = expected.Split('\n');
        var b = actual.Split('\n');
        var lcs = new int[a.Length + 1, b.Length + 1];
        for (int i = a.Length - 1; i >= 0; i--)
            for (int j = b.Length - 1; j >= 0; j--)
                lcs[i, j] = a[i] == b[j] ? lcs[i + 1, j + 1] + 1 : Math.Max(lcs[i + 1, j], lcs[i, j + 1]);
        var ops = new List<(char Op, string Line)>();
        int x = 0, y = 0;
        while (x < a.Length || y < b.Length)
        {
            if (x < a.Length && y < b.Length && a[x] == b[y]) { ops.Add((' ', a[x])); x++; y++; }
            else if (y < b.Length && (x == a.Length || lcs[x, y + 1] >= lcs[x + 1, y])) ops.Add(('+', b[y++]));
            else ops.Add(('-', a[x++]));
        }
        var sb = new StringBuilder();
        int last = -1;
        for (int k = 0; k < ops.Count; k++)
        {
            bool near = false;
            for (int m = Math.Max(0, k - context); m <= Math.Min(ops.Count - 1, k + context) && !near; m++) near = ops[m].Op != ' ';
            if (!near) continue;
            if (last >= 0 && k != last + 1) sb.AppendLine("...");
            sb.Append(ops[k].Op).AppendLine(ops[k].Line);
            last = k;
        }
        return sb.ToString();
    }
}
