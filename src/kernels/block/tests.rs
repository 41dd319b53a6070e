//! The fused block against burn's own layers and its fallback, values and gradients.
use super::*;
use crate::backend::BackendKind;
use burn::tensor::Distribution;

use crate::kernels::test_util::{assert_close, values};

#[test]
fn the_cpu_backends_have_the_fused_kernel_with_and_without_autodiff() {
    for backend in [BackendKind::Flex, BackendKind::Ndarray] {
        assert!(has_fused_kernel(&backend.device()), "{backend}");
        assert!(has_fused_kernel(&backend.device().autodiff()), "{backend}");
    }
}

/// Values and all three gradients of the fused kernel against the composed fallback
/// (burn's own conv2d, max_pool2d and relu), on both backends: a batch that is not a
/// multiple of the task size, odd sides (the last row and column are dropped), an input
/// that is not trained through (the first layer), and the network's 1 and 16 channels.
/// [`conv3x3_pool_relu`] picks the kernel on these backends. The forward pass takes each of
/// its paths here: single-channel, im2col (3 channels) and Winograd (16, at the AVX-512 and
/// AVX2 levels, whichever `MNIST_CNN_SIMD` leaves in force; im2col at the scalar level).
#[test]
fn fused_kernel_matches_the_composed_fallback_and_its_gradients() {
    for backend in [BackendKind::Flex, BackendKind::Ndarray] {
        for (channels, train_input) in [(1, false), (1, true), (3, true), (16, true), (16, false)] {
            let device = backend.device().autodiff();
            device.seed(3);
            let random = |dims: [usize; 4]| {
                Tensor::<4>::random(dims, Distribution::Normal(0.0, 1.0), &device)
            };
            // A blank first image makes every window tie at the bias, as MNIST's background
            // does; burn and the kernel both pass the gradient to the first of equals.
            let input = random([5, channels, 7, 9]).slice_assign(
                [0..1, 0..channels, 0..7, 0..9],
                Tensor::zeros([1, channels, 7, 9], &device),
            );
            // 16 filters: with 16 channels, the shape the Winograd path takes.
            let weight = random([16, channels, 3, 3]).require_grad();
            let bias =
                Tensor::<1>::random([16], Distribution::Normal(0.0, 1.0), &device).require_grad();
            let output_weights = random([5, 16, 3, 4]);
            let run = |block: fn(Tensor<4>, Tensor<4>, Tensor<1>) -> Tensor<4>| {
                let leaf = input.clone().detach();
                let leaf = if train_input {
                    leaf.require_grad()
                } else {
                    leaf
                };
                let output = block(leaf.clone(), weight.clone(), bias.clone());
                let grads = (output.clone() * output_weights.clone()).sum().backward();
                (
                    values(output),
                    leaf.grad(&grads).map(values),
                    values(weight.grad(&grads).unwrap()),
                    values(bias.grad(&grads).unwrap()),
                )
            };
            let fused = run(conv3x3_pool_relu_fused);
            let composed = run(conv3x3_pool_relu_composed);
            let case = format!("{backend}, {channels} channels");
            assert_eq!(
                run(conv3x3_pool_relu),
                fused,
                "dispatched to the kernel ({case})"
            );
            assert_close(&fused.0, &composed.0, &format!("output ({case})"));
            assert!(fused.0.contains(&0.0), "ReLU clamped something ({case})");
            assert_eq!(fused.1.is_some(), train_input, "{case}");
            assert_eq!(composed.1.is_some(), train_input, "{case}");
            if let (Some(fused), Some(composed)) = (&fused.1, &composed.1) {
                assert_close(fused, composed, &format!("input gradient ({case})"));
            }
            assert_close(&fused.2, &composed.2, &format!("weight gradient ({case})"));
            assert_close(&fused.3, &composed.3, &format!("bias gradient ({case})"));
        }
    }
}

/// Images with a side under two pool to nothing on both paths.
#[test]
fn images_too_small_to_pool_give_empty_outputs_on_both_paths() {
    for backend in [BackendKind::Flex, BackendKind::Ndarray] {
        let device = backend.device();
        for [height, width] in [[1, 5], [5, 1], [1, 1]] {
            let input = Tensor::<4>::ones([2, 3, height, width], &device);
            let weight = Tensor::<4>::ones([4, 3, 3, 3], &device);
            let bias = Tensor::<1>::ones([4], &device);
            let expected = [2, 4, height / 2, width / 2];
            for block in [conv3x3_pool_relu_fused, conv3x3_pool_relu_composed] {
                let output = block(input.clone(), weight.clone(), bias.clone());
                assert_eq!(output.dims(), expected, "{backend}, {height}x{width}");
            }
        }
    }
}

#[test]
fn large_images_get_fewer_images_per_task() {
    let shape = |side: usize, channels: usize, filters: usize| {
        BlockShape::new(&[8, channels, side, side], &[filters, channels, 3, 3])
    };
    assert_eq!(shape(28, 1, 16).images_per_task(), IMAGES_PER_TASK);
    assert_eq!(shape(14, 16, 32).images_per_task(), IMAGES_PER_TASK);
    // (144 + 32) values per pixel of a 128x128 image: 11.5 MB, more than the budget.
    assert_eq!(shape(128, 16, 32).images_per_task(), 1);
    assert_eq!(shape(64, 16, 32).images_per_task(), 2);
}

#[test]
fn inference_matches_the_composed_fallback() {
    for backend in [BackendKind::Flex, BackendKind::Ndarray] {
        let device = backend.device();
        device.seed(4);
        let input = Tensor::<4>::random([3, 2, 6, 5], Distribution::Default, &device);
        let weight = Tensor::<4>::random([5, 2, 3, 3], Distribution::Normal(0.0, 1.0), &device);
        let bias = Tensor::<1>::random([5], Distribution::Normal(0.0, 1.0), &device);
        let ours = conv3x3_pool_relu(input.clone(), weight.clone(), bias.clone());
        assert_eq!(ours.dims(), [3, 5, 3, 2]);
        assert_close(
            &values(ours),
            &values(conv3x3_pool_relu_composed(input, weight, bias)),
            &backend.to_string(),
        );
    }
}

/// The single-channel forward path (the direct kernel at AVX-512 and AVX2) at shapes that
/// fill whole vectors of windows and leave partial ones (16 or 8 windows a vector), with
/// filter counts that are not a vector's width: values and the weight and bias gradients,
/// whose backward pass reads the winners it recorded, against burn's layers.
#[test]
fn single_channel_blocks_match_the_composed_fallback_at_many_shapes() {
    let device = BackendKind::Flex.device().autodiff();
    device.seed(5);
    for [height, width] in [[2, 2], [3, 40], [28, 28], [31, 30], [33, 17]] {
        for filters in [1, 5, 16] {
            let input = Tensor::<4>::random([6, 1, height, width], Distribution::Default, &device);
            let weight =
                Tensor::<4>::random([filters, 1, 3, 3], Distribution::Normal(0.0, 1.0), &device)
                    .require_grad();
            let bias = Tensor::<1>::random([filters], Distribution::Normal(0.0, 0.5), &device)
                .require_grad();
            let output_weights = Tensor::<4>::random(
                [6, filters, height / 2, width / 2],
                Distribution::Normal(0.0, 1.0),
                &device,
            );
            let run = |block: fn(Tensor<4>, Tensor<4>, Tensor<1>) -> Tensor<4>| {
                let output = block(input.clone(), weight.clone(), bias.clone());
                let grads = (output.clone() * output_weights.clone()).sum().backward();
                (
                    values(output),
                    values(weight.grad(&grads).unwrap()),
                    values(bias.grad(&grads).unwrap()),
                )
            };
            let (fused, composed) = (
                run(conv3x3_pool_relu_fused),
                run(conv3x3_pool_relu_composed),
            );
            let case = format!("{height}x{width}, {filters} filters");
            assert_close(&fused.0, &composed.0, &format!("output ({case})"));
            assert_close(&fused.1, &composed.1, &format!("weight gradient ({case})"));
            assert_close(&fused.2, &composed.2, &format!("bias gradient ({case})"));
        }
    }
}
