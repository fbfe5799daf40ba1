using System.Diagnostics;

namespace Harness.Cli;

/// <summary>Finds the repository's guest kernel and builds it (guest/build.sh, incremental) when needed.</summary>
internal static class DefaultImage
{
    public const string RelativeImage = "guest/build/kernel/kernel.elf";

    public sealed class BuildException(string message) : Exception(message);

    public static string Ensure()
    {
        string root = FindRoot() ?? throw new BuildException(
            "no image given and the bundled guest kernel was not found (run from inside the repository, or pass an image path)");
        string script = Path.Combine(root, "guest", "build.sh");
        var psi = new ProcessStartInfo("bash", [script]) { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = root };
        using var p = Process.Start(psi) ?? throw new BuildException("could not start bash to build the guest kernel");
        string output = p.StandardOutput.ReadToEnd() + p.StandardError.ReadToEnd();
        p.WaitForExit();
        if (p.ExitCode != 0) throw new BuildException($"building the guest kernel failed ({script}):\n{output.TrimEnd()}");
        return Path.Combine(root, RelativeImage);
    }

    private static string? FindRoot()
    {
        foreach (var start in new[] { Environment.CurrentDirectory, AppContext.BaseDirectory })
        {
            for (var d = new DirectoryInfo(start); d is not null; d = d.Parent)
                if (File.Exists(Path.Combine(d.FullName, "guest", "build.sh")) && File.Exists(Path.Combine(d.FullName, "Harness.sln")))
                    return d.FullName;
        }
        return null;
    }
}
