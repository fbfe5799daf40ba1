using System.Diagnostics;
using System.Text;

namespace Harness.Tests.Shared;

/// <summary>
/// The built harness CLI (cli/bin/Release/net10.0/harness.dll) as a child process, for the test
/// projects that check its output and exit codes. Linked into each of them (one file, not a project,
/// so no test assembly depends on another). The CLI is rebuilt first when any source it is built
/// from is newer than the dll, so no test reads the output of a stale binary.
/// </summary>
public static class HarnessCli
{
    private static readonly Lazy<string> root = new(() =>
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "Harness.sln"))) return d.FullName;
        throw new InvalidOperationException($"repository root (the folder holding Harness.sln) not found above {AppContext.BaseDirectory}");
    });

    private static readonly Lazy<string> dll = new(Build);

    public static string RepoRoot => root.Value;

    public static string Dll => dll.Value;

    /// <summary>Runs "dotnet harness.dll args" in the repository root.</summary>
    public static (int Code, string Stdout, string Stderr) Run(TimeSpan timeout, params string[] args) => Exec("dotnet", [Dll, .. args], timeout);

    private static string Build()
    {
        string path = Path.Combine(RepoRoot, "cli", "bin", "Release", "net10.0", "harness.dll");
        string sep = Path.DirectorySeparatorChar.ToString();
        DateTime newest = new[] { "cli", "Dbt", "Machine.Smp", "Properties", "Verification" }
            .SelectMany(d => Directory.EnumerateFiles(Path.Combine(RepoRoot, d), "*.*", SearchOption.AllDirectories))
            .Where(f => (f.EndsWith(".cs", StringComparison.Ordinal) || f.EndsWith(".csproj", StringComparison.Ordinal))
                && !f.Contains($"{sep}obj{sep}") && !f.Contains($"{sep}bin{sep}"))
            .Select(File.GetLastWriteTimeUtc).Max();
        if (!File.Exists(path) || File.GetLastWriteTimeUtc(path) < newest)
        {
            var (code, output, error) = Exec("dotnet", ["build", Path.Combine(RepoRoot, "cli"), "-c", "Release", "-nologo", "-v", "q"], TimeSpan.FromMinutes(3));
            if (code != 0 || !File.Exists(path)) throw new InvalidOperationException($"building the CLI failed (exit {code}):\n{output}\n{error}");
        }
        return path;
    }

    /// <summary>Runs a process to completion, killing it (and failing) after timeout.</summary>
    public static (int Code, string Stdout, string Stderr) Exec(string file, string[] args, TimeSpan timeout)
    {
        var psi = new ProcessStartInfo(file, args)
        {
            RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = RepoRoot,
            StandardOutputEncoding = Encoding.UTF8, StandardErrorEncoding = Encoding.UTF8,
        };
        psi.Environment["DOTNET_NOLOGO"] = "1";
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(timeout))
        {
            p.Kill(entireProcessTree: true);
            throw new TimeoutException($"{file} {string.Join(' ', args)} did not finish within {timeout.TotalSeconds} s");
        }
        p.WaitForExit();
        return (p.ExitCode, stdout.Result, stderr.Result);
    }
}
