//! `drlb selftest`: proof on a director that this kernel runs the dataplane as the host
//! model says — the fixture table ([`fixtures`]), a differential fuzz ([`fuzz`]), and a
//! throwaway lab of network namespaces with real TCP ([`lab`], built from [`netns`]).

pub mod fixtures;
pub mod fuzz;
pub mod ipvs_choices;
pub mod ipvs_sync;
pub mod lab;
pub mod netns;
