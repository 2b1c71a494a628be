// The .NET sample app: stands in for the seed's sample. Built with mcs
// (Debian's mono-mcs) and run on the .NET Core 3.1 runtime (build.sh).
//
//   App.dll serve          requests forever: Fibonacci, Echo, the seed's two
//                          methods (below), one EventSource event per
//                          request, and a hot loop (HotLoop); every 50th
//                          request throws (and catches) Thrower's exception
//   App.dll burst N [exit] when a session enables Tracecar-Sample, emits N
//                          Request events with known values, then GC.Collect(),
//                          then Done(N); with "exit", exits right after
//   App.dll spin           only the hot loop, for profiles and dumps
//   App.dll sort           Array.Sort(int[]) in a loop: native runtime code
//                          (libcoreclr.so) under a managed caller
//   App.dll methods N      JIT-compiles N dynamic methods, then spins
//   App.dll paced N        emits N Request events a second, forever
//   App.dll rate           the hot loop, printing how many rounds of it ran
//                          each second (the bench's measure of overhead)
//   App.dll throw N        throws N InvalidOperationException a second,
//                          "tracecar exception I" for I = 0, 1, …, from
//                          Thrower.Fail(int) called by Thrower.Run(), and
//                          catches each
//   App.dll alloc          allocates 10,000 byte[1000] a second in
//                          Allocator.Allocate(), called by Allocator.Run()
//   App.dll contend        two threads take one lock: one holds it 20 ms at
//                          a time (Contender.Hold), the other waits for it
//                          in Contender.Wait()
//   App.dll meter          the app's own meter, Tracecar.Sample (.NET 6 and
//                          later): on each line on stdin, the counter
//                          sample.requests{route=/a} +10, the histogram
//                          sample.latency (ms) records 42 and the up-down
//                          counter sample.inflight +1; the observable gauge
//                          sample.queue always reads 1234
//   App.dll inline         calls Inlined.Add(int, int), a method small
//                          enough to inline, from Inlined.Run() in a loop
//                          (with tiered compilation off, Run is compiled
//                          optimized at once and Add never has code)
//   App.dll hold N         keeps N Tracecar.Sample.Held objects (and the
//                          array holding them) alive, then spins
//   App.dll seed           the seed's two traced methods, on instances:
//                          FibonacciProvider.calculateFibonacciValue(i % 30)
//                          and EchoProvider.calculateEchoValue("req-" + i),
//                          twice a second until a line arrives on stdin,
//                          then as fast as it can (so that the runtime
//                          tiers calculateEchoValue up while it is traced)
using System;
using System.Collections.Generic;
using System.Diagnostics.Tracing;
using System.Reflection;
using System.Reflection.Emit;
using System.Runtime.CompilerServices;
using System.Threading;

namespace Tracecar.Sample
{
    [EventSource(Name = "Tracecar-Sample")]
    public sealed class SampleEvents : EventSource
    {
        public static readonly SampleEvents Log = new SampleEvents();

        [Event(1, Level = EventLevel.Informational)]
        public void Request(int Id, string Name, long Value) { WriteEvent(1, Id, Name, Value); }

        [Event(2, Level = EventLevel.Informational)]
        public void Done(int Count) { WriteEvent(2, Count); }
    }

    public static class FibonacciProvider
    {
        public static long CalculateFibonacciValue(int n)
        {
            return n < 2 ? n : CalculateFibonacciValue(n - 1) + CalculateFibonacciValue(n - 2);
        }
    }

    public static class EchoProvider
    {
        public static string CalculateEchoValue(string text)
        {
            return text.ToUpperInvariant();
        }
    }

    public static class Work
    {
        static long sink;

        // The hot managed method a profile must name.
        public static long HotLoop(int rounds)
        {
            long acc = 0;
            for (int i = 0; i < rounds; i++)
            {
                acc += (acc ^ i) * 31 + (i % 7);
            }
            sink += acc;
            return acc;
        }

        public static void Serve()
        {
            var seedFib = new Seed.FibonacciProvider();
            var seedEcho = new Seed.EchoProvider();
            for (int i = 0; ; i++)
            {
                long fib = FibonacciProvider.CalculateFibonacciValue(20);
                string echo = EchoProvider.CalculateEchoValue("req-" + i);
                // The seed's traced methods, on instances (JIT code).
                sink += seedFib.calculateFibonacciValue(i % 30);
                sink += seedEcho.calculateEchoValue("seed-" + i).Length;
                SampleEvents.Log.Request(i, echo, fib);
                if (i % 50 == 0)
                {
                    try
                    {
                        Thrower.Fail(i);
                    }
                    catch (InvalidOperationException)
                    {
                    }
                }
                HotLoop(2000000);
                Thread.Sleep(5);
            }
        }

        public static void Spin()
        {
            for (;;)
            {
                HotLoop(5000000);
            }
        }

        public static void SortForever()
        {
            var random = new Random(1);
            var data = new int[100000];
            for (;;)
            {
                for (int i = 0; i < data.Length; i++)
                {
                    data[i] = random.Next();
                }
                Array.Sort(data);
                sink += data[0];
            }
        }

        public static void Burst(int count, bool exit)
        {
            while (!SampleEvents.Log.IsEnabled())
            {
                Thread.Sleep(10);
            }
            for (int i = 0; i < count; i++)
            {
                SampleEvents.Log.Request(i, "req-" + i, (long)i * 1000000007L);
            }
            GC.Collect();
            GC.Collect();
            SampleEvents.Log.Done(count);
            if (exit)
            {
                Environment.Exit(0);
            }
            Thread.Sleep(Timeout.Infinite);
        }

        public static void Paced(int perSecond)
        {
            var watch = System.Diagnostics.Stopwatch.StartNew();
            long sent = 0;
            for (;;)
            {
                long due = (long)(watch.Elapsed.TotalSeconds * perSecond);
                for (; sent < due; sent++)
                {
                    SampleEvents.Log.Request((int)sent, "req", sent);
                }
                Thread.Sleep(1);
            }
        }

        public static void Rate()
        {
            var watch = System.Diagnostics.Stopwatch.StartNew();
            long rounds = 0;
            double next = 1;
            for (;;)
            {
                HotLoop(100000);
                rounds++;
                if (watch.Elapsed.TotalSeconds >= next)
                {
                    Console.WriteLine(rounds);
                    rounds = 0;
                    next += 1;
                }
            }
        }

        public static void Methods(int count)
        {
            for (int i = 0; i < count; i++)
            {
                var method = new DynamicMethod("Generated" + i, typeof(int), new[] { typeof(int) });
                var il = method.GetILGenerator();
                il.Emit(OpCodes.Ldarg_0);
                il.Emit(OpCodes.Ldc_I4, i);
                il.Emit(OpCodes.Add);
                il.Emit(OpCodes.Ret);
                var f = (Func<int, int>)method.CreateDelegate(typeof(Func<int, int>));
                sink += f(i);
            }
            Console.WriteLine("methods: " + count);
            Spin();
        }
    }

    public static class Thrower
    {
        [MethodImpl(MethodImplOptions.NoInlining)]
        public static void Fail(int i)
        {
            throw new InvalidOperationException("tracecar exception " + i);
        }

        [MethodImpl(MethodImplOptions.NoInlining)]
        public static void Run(int perSecond)
        {
            for (int i = 0; ; i++)
            {
                try
                {
                    Fail(i);
                }
                catch (InvalidOperationException)
                {
                }
                Thread.Sleep(1000 / Math.Max(perSecond, 1));
            }
        }
    }

    public static class Allocator
    {
        static byte[][] kept = new byte[64][];

        [MethodImpl(MethodImplOptions.NoInlining)]
        public static byte[] Allocate(int i)
        {
            var block = new byte[1000];
            block[i % 1000] = 1;
            kept[i % kept.Length] = block;
            return block;
        }

        public static void Run()
        {
            for (int i = 0; ; i++)
            {
                Allocate(i);
                if (i % 100 == 99)
                {
                    Thread.Sleep(10);
                }
            }
        }
    }

    public static class Contender
    {
        static readonly object gate = new object();
        static long sink;

        [MethodImpl(MethodImplOptions.NoInlining)]
        public static void Hold()
        {
            for (;;)
            {
                lock (gate)
                {
                    Thread.Sleep(20);
                }
                Thread.Sleep(1);
            }
        }

        [MethodImpl(MethodImplOptions.NoInlining)]
        public static void Wait()
        {
            for (;;)
            {
                lock (gate)
                {
                    sink++;
                }
                Thread.Sleep(1);
            }
        }

        public static void Run()
        {
            new Thread(Hold) { IsBackground = true }.Start();
            Wait();
        }
    }

    // System.Diagnostics.Metrics through reflection: mcs compiles against
    // Mono's profile, which has no Meter.
    public static class Metered
    {
        static int queue = 1234;

        public static int Queue() { return queue; }

        static MethodInfo Find(Type type, string name, int parameters, Type second)
        {
            foreach (MethodInfo m in type.GetMethods())
            {
                ParameterInfo[] p = m.GetParameters();
                if (m.Name == name && p.Length == parameters
                    && (second == null || p[1].ParameterType == second
                        || (p[1].ParameterType.IsGenericType && second.IsGenericTypeDefinition
                            && p[1].ParameterType.GetGenericTypeDefinition() == second)))
                {
                    return m;
                }
            }
            throw new MissingMethodException(type.Name, name);
        }

        public static void Run()
        {
            Type meterType = Type.GetType("System.Diagnostics.Metrics.Meter, System.Diagnostics.DiagnosticSource", true);
            object meter = Activator.CreateInstance(meterType, new object[] { "Tracecar.Sample" });
            object requests = Find(meterType, "CreateCounter", 3, typeof(string)).MakeGenericMethod(typeof(long))
                .Invoke(meter, new object[] { "sample.requests", "{request}", "requests served" });
            object latency = Find(meterType, "CreateHistogram", 3, typeof(string)).MakeGenericMethod(typeof(double))
                .Invoke(meter, new object[] { "sample.latency", "ms", "request latency" });
            object inflight = Find(meterType, "CreateUpDownCounter", 3, typeof(string)).MakeGenericMethod(typeof(long))
                .Invoke(meter, new object[] { "sample.inflight", "{request}", "requests in flight" });
            Func<int> observe = Queue;
            Find(meterType, "CreateObservableGauge", 4, typeof(Func<>)).MakeGenericMethod(typeof(int))
                .Invoke(meter, new object[] { "sample.queue", observe, "{item}", "queue length" });
            MethodInfo add = Find(requests.GetType(), "Add", 2, typeof(KeyValuePair<string, object>));
            MethodInfo record = Find(latency.GetType(), "Record", 1, null);
            MethodInfo change = Find(inflight.GetType(), "Add", 1, null);
            var route = new KeyValuePair<string, object>("route", "/a");
            while (Console.ReadLine() != null)
            {
                add.Invoke(requests, new object[] { 10L, route });
                record.Invoke(latency, new object[] { 42.0 });
                change.Invoke(inflight, new object[] { 1L });
            }
            Thread.Sleep(Timeout.Infinite);
        }
    }

    public static class Inlined
    {
        static long total;

        public static int Add(int a, int b) { return a + b; }

        [MethodImpl(MethodImplOptions.NoInlining)]
        public static void Run()
        {
            for (int i = 0; ; i++)
            {
                total += Add(i, 1);
                if (i % 1000 == 0)
                {
                    Thread.Sleep(1);
                }
            }
        }
    }

    public sealed class Held
    {
        public long A;
        public long B;
    }

    public static class Holder
    {
        static Held[] held;

        public static void Run(int count)
        {
            held = new Held[count];
            for (int i = 0; i < count; i++)
            {
                held[i] = new Held { A = i };
            }
            Console.WriteLine("held: " + held.Length);
            Work.Spin();
        }
    }

    public static class Program
    {
        public static int Main(string[] args)
        {
            string mode = args.Length > 0 ? args[0] : "serve";
            int count = args.Length > 1 ? int.Parse(args[1]) : 0;
            Console.WriteLine("tracecar sample (.NET): " + mode);
            switch (mode)
            {
                case "serve": Work.Serve(); break;
                case "spin": Work.Spin(); break;
                case "sort": Work.SortForever(); break;
                case "burst": Work.Burst(count, args.Length > 2 && args[2] == "exit"); break;
                case "methods": Work.Methods(count); break;
                case "paced": Work.Paced(count); break;
                case "rate": Work.Rate(); break;
                case "seed": Seed.Demo.Run(); break;
                case "throw": Thrower.Run(count); break;
                case "alloc": Allocator.Run(); break;
                case "contend": Contender.Run(); break;
                case "meter": Metered.Run(); break;
                case "hold": Holder.Run(count); break;
                case "inline": Inlined.Run(); break;
                default:
                    Console.Error.WriteLine("modes: serve | spin | sort | burst N [exit] | methods N | paced N | rate | seed | throw N | alloc | contend | meter | hold N | inline");
                    return 2;
            }
            return 0;
        }
    }
}

namespace Tracecar.Sample.Seed
{
    // The seed workflow's two methods, which it traced with AOT (crossgen)
    // and uprobes; here they stay JIT-compiled. NoInlining keeps them out
    // of their caller's code, as larger methods are in real services: an
    // inlined method has no entry of its own to probe.
    public class FibonacciProvider
    {
        [MethodImpl(MethodImplOptions.NoInlining)]
        public int calculateFibonacciValue(int n)
        {
            int a = 0, b = 1;
            for (int i = 0; i < n; i++)
            {
                int t = a + b;
                a = b;
                b = t;
            }
            return a;
        }
    }

    public class EchoProvider
    {
        // No loop: the runtime compiles it quickly first (QuickJitted) and
        // again, optimized, once it is called often (OptimizedTier1).
        [MethodImpl(MethodImplOptions.NoInlining)]
        public string calculateEchoValue(string text)
        {
            return text + "!";
        }
    }

    public static class Demo
    {
        static volatile bool fast;
        static long sink;

        public static void Run()
        {
            var fib = new FibonacciProvider();
            var echo = new EchoProvider();
            new Thread(() => { Console.In.ReadLine(); fast = true; }) { IsBackground = true }.Start();
            for (int i = 0; ; i++)
            {
                sink += fib.calculateFibonacciValue(i % 30);
                sink += echo.calculateEchoValue("req-" + i).Length;
                if (!fast)
                {
                    Thread.Sleep(500);
                }
                else if (i % 100 == 0)
                {
                    Thread.Sleep(1);
                }
            }
        }
    }
}
