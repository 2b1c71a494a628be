// A startup hook that runs the sample app inside another .NET app: how
// the tests run App.dll in a single-file, self-contained executable (the
// runtime linked in, no libcoreclr.so), which runs its own Main otherwise.
// DOTNET_STARTUP_HOOKS names this library; TRACECAR_HOOK_APP names App.dll
// and TRACECAR_HOOK_ARGS its arguments (space separated). The host app's
// own Main never runs: the process exits with App's.
using System;
using System.Reflection;

internal class StartupHook
{
    public static void Initialize()
    {
        string app = Environment.GetEnvironmentVariable("TRACECAR_HOOK_APP");
        if (string.IsNullOrEmpty(app)) return;
        string raw = Environment.GetEnvironmentVariable("TRACECAR_HOOK_ARGS") ?? "";
        string[] args = raw.Split(new[] { ' ' }, StringSplitOptions.RemoveEmptyEntries);
        Assembly assembly = Assembly.LoadFrom(app);
        object result = assembly.EntryPoint.Invoke(null, new object[] { args });
        Environment.Exit(result is int ? (int)result : 0);
    }
}
