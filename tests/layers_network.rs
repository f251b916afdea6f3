//! The sequential network: state-dict names, access by name, partial forward and backward
//! passes, and the errors of misuse.

mod layers_common;

use dcgan::kernels::Conv2dSpec;
use dcgan::layers::{
    BatchNorm, BufferData, Conv2d, Flatten, Init, InputGrad, Layer, LeakyRelu, Linear, Mode,
    Network, ParamGrads, Tanh,
};
use dcgan::rng::Rng;
use dcgan::Error;
use layers_common::*;
use ndarray::Array4;

/// conv(bias), BN, LeakyReLU, flatten, linear, tanh on `[n, 2, 4, 4]`.
fn network(seed: u64) -> Network {
    let layers: Vec<Box<dyn Layer + Send + Sync>> = vec![
        Box::new(Conv2d::new(Conv2dSpec::new(2, 3, 3).stride(2).padding(1), true).unwrap()),
        Box::new(BatchNorm::new2d(3).unwrap()),
        Box::new(LeakyRelu::new(0.2).unwrap()),
        Box::new(Flatten::new()),
        Box::new(Linear::new(12, 5, true).unwrap()),
        Box::new(Tanh::new()),
    ];
    Network::new("main", layers, &mut Rng::from_seed(seed), Init::PyTorch).unwrap()
}

#[test]
fn names_follow_sequential_indices() {
    let net = network(1);
    let params: Vec<(String, Vec<usize>)> = net.named_params().map(|t| (t.name, t.shape)).collect();
    let expected = [
        ("main.0.weight", vec![3, 2, 3, 3]),
        ("main.0.bias", vec![3]),
        ("main.1.weight", vec![3]),
        ("main.1.bias", vec![3]),
        ("main.4.weight", vec![5, 12]),
        ("main.4.bias", vec![5]),
    ];
    let expected: Vec<(String, Vec<usize>)> =
        expected.iter().map(|(n, s)| (n.to_string(), s.clone())).collect();
    assert_eq!(params, expected);
    assert_eq!(net.num_params(), 54 + 3 + 3 + 3 + 60 + 5);
    let grads: Vec<String> = net.named_grads().map(|t| t.name).collect();
    let names: Vec<String> = expected.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(grads, names);

    let buffers: Vec<(String, Vec<usize>)> =
        net.named_buffers().map(|b| (b.name, b.shape)).collect();
    assert_eq!(
        buffers,
        vec![
            ("main.1.running_mean".to_string(), vec![3]),
            ("main.1.running_var".to_string(), vec![3]),
            ("main.1.num_batches_tracked".to_string(), vec![]),
        ]
    );
    // Tensors tile the flat buffer in order.
    let total: usize = net.named_params().map(|t| t.data.len()).sum();
    assert_eq!(total, net.params().len());
}

#[test]
fn set_by_name_round_trips_and_checks() {
    let mut net = network(2);
    let values: Vec<f32> = (0..15).map(|i| i as f32 * 0.1).collect();
    net.set_param("main.4.weight", &[0.5; 60]).unwrap();
    net.set_param("main.0.bias", &values[..3]).unwrap();
    assert_eq!(net.param("main.0.bias").unwrap(), &values[..3]);
    assert_eq!(net.param("main.4.weight").unwrap(), &[0.5; 60][..]);

    assert!(matches!(
        net.set_param("main.0.bias", &values[..4]),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(matches!(
        net.set_param("main.2.weight", &values[..3]),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(net.set_param("main.0.bias", &[f32::NAN; 3]), Err(Error::NonFinite { .. })));

    net.set_buffer("main.1.running_var", BufferData::F32(&[2.0, 3.0, 4.0])).unwrap();
    net.set_buffer("main.1.num_batches_tracked", BufferData::I64(&[12])).unwrap();
    let buffers: Vec<_> = net.named_buffers().collect();
    assert_eq!(buffers[1].data, BufferData::F32(&[2.0, 3.0, 4.0]));
    assert_eq!(buffers[2].data, BufferData::I64(&[12]));
    for bad in ["main.0.running_var", "main.9.running_var", "other.1.running_var", "main.x.y", "1"]
    {
        let result = net.set_buffer(bad, BufferData::F32(&[1.0; 3]));
        assert!(matches!(result, Err(Error::InvalidArgument { .. })), "{bad}");
    }
}

#[test]
fn init_is_seeded_and_follows_the_scheme() {
    assert_eq!(network(3).params(), network(3).params());
    assert_ne!(network(3).params(), network(4).params());

    let layers: Vec<Box<dyn Layer + Send + Sync>> = vec![
        Box::new(Conv2d::new(Conv2dSpec::new(64, 64, 4), false).unwrap()),
        Box::new(BatchNorm::new2d(4096).unwrap()),
    ];
    let net = Network::new("main", layers, &mut Rng::from_seed(5), Init::Dcgan).unwrap();
    let moments = |v: &[f32]| {
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        (mean, var.sqrt())
    };
    // 65536 and 4096 draws: standard errors of the mean 8e-5 and 3e-4.
    let (mean, std) = moments(net.param("main.0.weight").unwrap());
    assert!(mean.abs() < 5e-4, "conv weight mean {mean}");
    assert!((std - 0.02).abs() < 5e-4, "conv weight std {std}");
    let (mean, std) = moments(net.param("main.1.weight").unwrap());
    assert!((mean - 1.0).abs() < 2e-3, "BN weight mean {mean}");
    assert!((std - 0.02).abs() < 2e-3, "BN weight std {std}");
    assert!(net.param("main.1.bias").unwrap().iter().all(|&b| b == 0.0), "BN bias");
}

#[test]
fn ranges_compose_to_the_whole_pass() {
    let mut rng = Rng::from_seed(6);
    let x = random_array(&mut rng, [3, 2, 4, 4], 1.0);
    let dy = random_array(&mut rng, [3, 5, 1, 1], 1.0);

    let mut whole = network(7);
    let y = whole.forward(x.clone(), Mode::Train).unwrap();
    let dx = whole.backward(dy.clone(), ParamGrads::Accumulate, InputGrad::Compute).unwrap();

    // Split after the fused BN + LeakyReLU pair (layers 1 and 2).
    let mut split = network(7);
    let features = split.forward_range(0..3, x, Mode::Train).unwrap();
    assert_eq!(features.shape(), &[3, 3, 2, 2]);
    let y_split = split.forward_range(3..6, features, Mode::Train).unwrap();
    assert_eq!(y_split, y);
    let dfeatures =
        split.backward_range(3..6, dy, ParamGrads::Accumulate, InputGrad::Compute).unwrap();
    let dfeatures = dfeatures.expect("input gradient requested");
    let dx_split =
        split.backward_range(0..3, dfeatures, ParamGrads::Accumulate, InputGrad::Compute).unwrap();
    assert_eq!(dx_split, dx);
    assert_eq!(split.grads(), whole.grads());
}

#[test]
fn backward_computes_only_what_is_asked() {
    let mut rng = Rng::from_seed(8);
    let mut net = network(9);
    let x = random_array(&mut rng, [2, 2, 4, 4], 1.0);
    let dy = random_array(&mut rng, [2, 5, 1, 1], 1.0);
    net.forward(x, Mode::Train).unwrap();

    let dx = net.backward(dy.clone(), ParamGrads::Skip, InputGrad::Compute).unwrap().unwrap();
    assert!(net.grads().iter().all(|&g| g == 0.0), "no parameter gradients with Skip");
    assert!(net.backward(dy.clone(), ParamGrads::Accumulate, InputGrad::Skip).unwrap().is_none());
    let once = net.grads().to_vec();
    assert!(once.iter().any(|&g| g != 0.0));
    let dx_again = net.backward(dy, ParamGrads::Accumulate, InputGrad::Compute).unwrap().unwrap();
    assert_eq!(dx_again, dx, "the input gradient does not depend on the gradient buffer");
    let doubled: Vec<f32> = once.iter().map(|g| g + g).collect();
    assert_eq!(net.grads(), &doubled[..], "gradients accumulate");
    net.zero_grad();
    assert!(net.grads().iter().all(|&g| g == 0.0));
}

#[test]
fn misuse_returns_errors() {
    let mut net = network(10);
    let dy = Array4::<f32>::zeros([2, 5, 1, 1]);
    let err = net.backward(dy, ParamGrads::Accumulate, InputGrad::Skip).unwrap_err();
    assert!(err.to_string().contains("no cached forward pass"), "{err}");

    let err = net.forward(Array4::zeros([2, 3, 4, 4]), Mode::Train).unwrap_err();
    assert!(err.to_string().contains("[2, 3, 4, 4]"), "{err}");
    let mut x = Array4::<f32>::zeros([2, 2, 4, 4]);
    x[[0, 1, 2, 3]] = f32::NAN;
    assert!(matches!(net.forward(x, Mode::Eval), Err(Error::NonFinite { .. })));
    assert!(net.forward_range(2..2, Array4::zeros([2, 3, 2, 2]), Mode::Eval).is_err());
    assert!(net.forward_range(0..7, Array4::zeros([2, 2, 4, 4]), Mode::Eval).is_err());

    net.forward(Array4::ones([2, 2, 4, 4]), Mode::Train).unwrap();
    let err = net.backward(Array4::zeros([2, 4, 1, 1]), ParamGrads::Skip, InputGrad::Skip);
    assert!(err.unwrap_err().to_string().contains("grad_output shape"));
    assert!(net.output_shape([2, 2, 4, 4]).unwrap() == [2, 5, 1, 1]);
    assert!(Network::new("main", Vec::new(), &mut Rng::from_seed(0), Init::PyTorch).is_err());
}
