// swift-tools-version:6.1
// mambaquant: post-training quantization of Mamba state-space language models (docs/DESIGN.md).
import PackageDescription

let package = Package(
    name: "mambaquant",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "mambaquant", targets: ["mambaquant"]),
        .library(name: "MambaModel", targets: ["MambaModel"]),
        // For the fuzz package (fuzz/Package.swift), which reaches the parsers through these.
        .library(name: "MambaCalibration", targets: ["MambaCalibration"]),
        .library(name: "MambaQuantization", targets: ["MambaQuantization"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        // `serve` (docs/DESIGN.md, "Serving"): Hummingbird 2 without its optional traits
        // (swift-configuration, full Foundation), Prometheus text for /metrics.
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1", traits: []),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    ],
    targets: [
        // System libraries. Debian installs openblas.pc behind /etc/alternatives; pkg-config
        // follows the link, so `apt-get install libopenblas-dev liblapacke-dev` is all a build needs.
        .systemLibrary(
            name: "COpenBLAS", pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(
            name: "CLapacke", pkgConfig: "lapacke",
            providers: [.apt(["liblapacke-dev"])]),
        // Image folders for Vision Mamba: libpng and libjpeg-turbo (libpng-dev, libjpeg-dev).
        .systemLibrary(name: "CPNG", pkgConfig: "libpng", providers: [.apt(["libpng-dev"])]),
        .systemLibrary(name: "CJPEG", pkgConfig: "libjpeg", providers: [.apt(["libjpeg-dev"])]),

        // Hot kernels in C (scan, activations, Hadamard, 16-bit weights, int8 GEMM with VNNI/AVX2
        // paths chosen at run time, scalar fallbacks; no unsafe flags) and the file/signal shims.
        .target(name: "CMambaKernels"),
        // PNG and JPEG decoding behind one call: both libraries fail by longjmp, caught in C.
        .target(name: "CMambaImageIO", dependencies: ["CPNG", "CJPEG"]),
        // Tensors, dtypes, safetensors IO, BLAS wrappers, the thread budget.
        .target(name: "MambaTensors", dependencies: ["COpenBLAS", "CMambaKernels"]),
        // Config, strict loader, the float forward over swappable ops, tokenizer, sampling.
        .target(name: "MambaModel", dependencies: ["MambaTensors", "CMambaKernels", "CMambaImageIO"]),
        // Observers, the stats file, running calibration windows through a model.
        .target(name: "MambaCalibration", dependencies: ["MambaModel", "MambaTensors"]),
        // Hadamard and KLT rotations, smoothing, norm folding: the function-preserving transforms.
        .target(name: "MambaTransforms", dependencies: ["MambaModel", "MambaTensors", "MambaCalibration", "CLapacke"]),
        // Quantizers, the quantized ops and checkpoint, the quantize pipeline.
        .target(name: "MambaQuantization", dependencies: ["MambaModel", "MambaTensors", "MambaCalibration", "MambaTransforms", "CMambaKernels"]),
        // Metrics, reports and what a comparison runs (the float model, checkpoints, on-the-fly
        // recipes with cached calibration); timing lives in MambaModel.
        .target(name: "MambaEvaluation", dependencies: ["MambaModel", "MambaTensors", "MambaCalibration", "MambaQuantization"]),
        // The OpenAI-compatible HTTP server: a scheduler that runs requests on the model, the routes.
        .target(
            name: "MambaServe",
            dependencies: [
                "MambaModel", "MambaTensors", "MambaQuantization",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]),
        // The thin command line.
        .executableTarget(
            name: "mambaquant",
            dependencies: [
                "MambaModel", "MambaTensors", "MambaCalibration", "MambaTransforms", "MambaQuantization", "MambaEvaluation", "MambaServe",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]),

        // Shared test helpers (fixture paths, seeded random data, error measures).
        .target(name: "TestSupport", dependencies: ["MambaTensors", "MambaModel", "CMambaKernels"], path: "Tests/TestSupport"),
        .testTarget(name: "MambaTensorsTests", dependencies: ["MambaTensors", "MambaModel", "TestSupport"]),
        .testTarget(name: "MambaModelTests", dependencies: ["MambaModel", "TestSupport"]),
        .testTarget(name: "MambaCalibrationTests", dependencies: ["MambaCalibration", "TestSupport"]),
        .testTarget(name: "MambaTransformsTests", dependencies: ["MambaTransforms", "MambaCalibration", "TestSupport"]),
        .testTarget(name: "MambaQuantizationTests", dependencies: ["MambaQuantization", "MambaCalibration", "TestSupport"]),
        .testTarget(name: "MambaEvaluationTests", dependencies: ["MambaEvaluation", "MambaCalibration", "TestSupport"]),
        .testTarget(
            name: "MambaServeTests",
            dependencies: [
                "MambaServe", "MambaEvaluation", "TestSupport",
                .product(name: "HummingbirdTesting", package: "hummingbird"),
            ]),
        .testTarget(name: "mambaquantTests", dependencies: ["TestSupport", "MambaCalibration", "mambaquant"]),
    ]
)
