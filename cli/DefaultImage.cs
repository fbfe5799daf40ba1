using System.Diagnostics;

namespace Harness.Cli;

/// <summary>Finds the repository's guest kernel and builds it (guest/build.sh, incremental) when needed.</summary>
internal static class DefaultImage
{
    public const string RelativeImage = "guest/build/kernel/kernel.elf";

    public sealed class BuildException(string message) : Exception(message);

    /// <summary>
    /// The bundled kernel's path, after an incremental build. say: a progress line (null: quiet,
    /// e.g. under --stats json). A cancelled build (a signal) kills the build and throws
    /// OperationCanceledException.
    /// </summary>
    public static string Ensure(CancellationToken cancel = default, Action<string>? say = null)
    {
        string root = FindRoot() ?? throw new BuildException(
            "no image given and the bundled guest kernel was not found (run from inside the repository, or pass an image path)");
        string script = Path.Combine(root, "guest", "build.sh");
        string image = Path.Combine(root, RelativeImage);
        // A fresh clone builds everything (about 10 s): say so. An up-to-date tree is checked silently.
        if (!File.Exists(image)) say?.Invoke($"building the guest kernel and its programs ({Path.GetRelativePath(Environment.CurrentDirectory, script)}) ...");
        var psi = new ProcessStartInfo("bash", [script]) { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = root };
        using var p = Process.Start(psi) ?? throw new BuildException("could not start bash to build the guest kernel");
        var output = p.StandardOutput.ReadToEndAsync(CancellationToken.None);
        var errors = p.StandardError.ReadToEndAsync(CancellationToken.None);
        try { p.WaitForExitAsync(cancel).GetAwaiter().GetResult(); }
        catch (OperationCanceledException)
        {
            try { p.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
            throw;
        }
        if (p.ExitCode != 0) throw new BuildException($"building the guest kernel failed ({script}):\n{(output.Result + errors.Result).TrimEnd()}");
        return image;
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
